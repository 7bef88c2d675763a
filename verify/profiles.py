"""Profiles: how hard the harness searches. quick runs in CI, standard is the default report.

The stages `varguard run` adds after the checks (verify/stages) say themselves which profiles run
them, with which options; `run --<stage>` and `--no-<stage>` override that.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    examples: int  # Hypothesis examples per (target, check), before the fixed known-bad cases
    max_elements: int  # cap on N*C*H*W of one batch-norm case
    compiled_examples: int  # torch.compile recompiles per shape (~2 s each on CPU): fewer
    statistical_samples: int  # samples per statistical test (init laws, SELU moments)
    timeout: float  # seconds one check may run in an isolated worker before it is killed
    # The device whose targets a run takes when none is named ("cuda": the GPU run); such a
    # run stops at once, exit 2, on a machine without it. None: every target that runs here.
    device: str | None = None
    # With a device: the families whose targets on it the run takes (None: all); the
    # project's Triton kernels of every family are taken whatever this says.
    families: tuple[str, ...] | None = None
    # With a device: further built-in targets the run takes by name (the references a stage
    # compares against: the norm families' CUDA eager targets for the GPU bench).
    extra_targets: tuple[str, ...] = ()


PROFILES = {
    "quick": Profile(
        name="quick",
        examples=12,
        max_elements=20_000,
        compiled_examples=3,
        statistical_samples=200_000,
        timeout=300.0,
    ),
    # Standard: the default report. Measured on 2 CPU cores (2026-12-01): the whole catalogue's
    # 1137 checks in 10 min (torch.compile and the Triton interpreter take 57% of it), one family or
    # drop-in in 1-3 min; then the stages (verify/stages: depth, ResNet-50 convergence, bench).
    "standard": Profile(
        name="standard",
        examples=20,
        max_elements=200_000,
        compiled_examples=5,
        statistical_samples=1_000_000,
        timeout=900.0,
    ),
    # The GPU run (scripts/gpu-check runs it as one device command): every CUDA target of every
    # family and every project Triton kernel, natively, through every check of its family at
    # the quick profile's effort (known cases first), at the standard profile's sizes (tile
    # edges past 2^16 are where GPU kernels branch); then the stages: ResNet-50-size benchmarks
    # against cuDNN with CUDA events and the same-run copy bandwidth, a short convergence run
    # (channels_last + autocast, as on CUDA by default) with its controls, and depth. One
    # worker per core (16 on the H200 machine): a compiling target's checks run side by side
    # (execution.schedule). Sized for 7 minutes on one H200; estimated, not yet measured.
    # `varguard run --profile gpu --plan` lists it on any machine.
    "gpu": Profile(
        name="gpu",
        examples=12,
        max_elements=200_000,
        compiled_examples=3,
        statistical_samples=200_000,
        timeout=300.0,
        device="cuda",
    ),
    # Release: deep search; the stages at full size (3 seeds, every ResNet-50 layer).
    "release": Profile(
        name="release",
        examples=300,
        max_elements=2_000_000,
        compiled_examples=40,
        statistical_samples=4_000_000,
        timeout=3600.0,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"profile={name!r} is unknown; use one of {sorted(PROFILES)}") from None

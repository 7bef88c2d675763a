"""Profiles: how hard the harness searches. quick runs in CI, standard is the default report.

Besides the search effort, a profile says which stages `varguard run` adds after the checks:
the ResNet-50 convergence job (``converge``) and the kernel benchmarks (``bench``), each as the
options its own command takes, or None for "not in this profile". `run --converge/--bench`
and `--no-converge/--no-bench` override them.
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
    converge: tuple[str, ...] | None = None  # `varguard converge` options, None: no stage
    bench: tuple[str, ...] | None = None  # `varguard bench` options, None: no stage


PROFILES = {
    "quick": Profile(
        "quick", examples=12, max_elements=20_000, compiled_examples=3, statistical_samples=200_000
    ),
    # Standard stays well under 15 min on 2 CPU cores (DESIGN.md): ~6 min of checks, then
    # ResNet-50 on digits for 8 epochs over 2 seeds (the fewest a t-test takes) with both
    # controls, ~3 min, then the quick bench (two layer sizes), ~1.5 min.
    "standard": Profile(
        "standard",
        examples=20,
        max_elements=200_000,
        compiled_examples=5,
        statistical_samples=1_000_000,
        converge=("--seeds", "2"),
        bench=("--quick", "--threads", "1"),
    ),
    # Release: DESIGN's multi-seed convergence (3 seeds) and every ResNet-50 layer size.
    "release": Profile(
        "release",
        examples=300,
        max_elements=2_000_000,
        compiled_examples=40,
        statistical_samples=4_000_000,
        converge=(),
        bench=(),
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"profile={name!r} is unknown; use one of {sorted(PROFILES)}") from None

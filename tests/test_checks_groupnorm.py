"""GroupNorm checks: every real CPU target passes, every planted bug is caught by the checks it
names, a user's drop-in is checked in its half-precision and channels_last variants, and torch's
channels_last one-pass variance is still there (and only there)."""

from __future__ import annotations

import dataclasses

import pytest
from normtests import QUICK, SMALL, cpu_targets, failures, write_module

from verify.checks import get_check
from verify.checks import groupnorm as gn_checks
from verify.checks.base import run_check
from verify.mutants import catalog
from verify.resolve import resolve
from verify.result import Status
from verify.strategies.groupnorm import GNCase

FAMILY = "groupnorm"


@pytest.mark.parametrize(
    "target, seed",
    [(t, 17 * i) for i, t in enumerate(cpu_targets(FAMILY))],
    ids=lambda v: v.name if hasattr(v, "name") else str(v),
)
def test_real_target_passes_every_check(target, seed):
    bad = failures(target, seed=seed)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "mutant", [m for m in catalog() if m.family == FAMILY], ids=lambda m: m.name
)
def test_mutant_is_caught_by_its_checks(mutant):
    for name in mutant.caught_by:
        r = run_check(get_check(name), mutant.target, QUICK, seed=0)
        assert r.status == Status.FAILED, (
            f"{mutant.name} ({mutant.bug}) survived {name}: {r.message}"
        )
        assert r.counterexample and r.repro


USER = """
import torch


class MyGroupNorm(torch.nn.GroupNorm):
    '''A user's drop-in group norm, written outside the project.'''
"""


@pytest.mark.parametrize("variant", ["float16, channels_last", "bfloat16, contiguous"])
def test_a_drop_in_written_outside_is_checked_in_its_variants(tmp_path, monkeypatch, variant):
    write_module(tmp_path, monkeypatch, "usergn", USER)
    assert resolve("usergn:MyGroupNorm").family == FAMILY  # from its base class
    target = resolve(f"usergn:MyGroupNorm[{variant}]")
    bad = failures(target, seed=8)
    assert not bad, "\n".join(bad)


def test_channels_last_one_pass_defect_is_torchs_and_narrow():
    """The defect's example fails on torch's float32 group norm and not on the op-by-op one; the
    matcher excludes a channels_last case at kappa 100 and not the same case contiguous, nor one
    with the group mean at 0."""
    check = get_check("groupnorm.forward")
    torch_gn = resolve("torch-groupnorm")
    defect = gn_checks.GROUP_NORM_CHANNELS_LAST_ONE_PASS["float32"]
    assert defect in check.defects_for(torch_gn) and defect.present(check, torch_gn)
    assert not check.defects_for(resolve("varguard-explicit-groupnorm-channels-last"))
    assert check.measure(resolve("varguard-explicit-groupnorm-channels-last"), defect.example).ok
    cl = GNCase(shape=(2, 8, 8, 8), num_groups=2, log10_kappa=2.0, x_layout="channels_last")
    assert defect.matches(cl)
    assert not defect.matches(GNCase(shape=cl.shape, num_groups=2, log10_kappa=2.0))
    assert not defect.matches(GNCase(shape=cl.shape, num_groups=2, x_layout="channels_last"))
    r = run_check(check, resolve("torch-groupnorm-channels-last"), SMALL, seed=1)
    assert r.status == Status.PASSED and "known defect still present" in r.message


def test_half_flat_group_dx_defect_is_torchs_and_narrow():
    """The float16 flat-group defect's example still fails on torch and passes on the op-by-op
    group norm; the matcher takes float16 groups with var + eps below the limit and nothing else."""
    check = get_check("groupnorm.backward")
    defect = gn_checks.HALF_FLAT_GROUP_DX
    torch_gn = resolve("torch-groupnorm-float16")
    assert defect in check.defects_for(torch_gn) and defect.present(check, torch_gn)
    assert not check.defects_for(resolve("varguard-explicit-groupnorm-float16"))
    assert check.measure(resolve("varguard-explicit-groupnorm-float16"), defect.example).ok
    assert defect not in check.defects_for(resolve("torch-groupnorm-bfloat16"))
    flat = defect.example
    assert defect.matches(flat)
    assert not defect.matches(dataclasses.replace(flat, eps=1e-5))
    assert not defect.matches(dataclasses.replace(flat, dtype="bfloat16", param_dtype="bfloat16"))
    spread = dataclasses.replace(
        flat, shape=(2, 4, 2, 2), num_groups=2
    )  # a one-value group is flat
    assert defect.matches(spread)
    assert not defect.matches(dataclasses.replace(spread, distribution="normal"))


def test_cuda_half_eps_defect_applies_to_torchs_cuda_float16_only_and_is_narrow():
    """Measured on an H200 (the first GPU run): torch's CUDA group norm rounds eps to float16.
    The defect names only torch's own CUDA float16 module (not autocast, compiled, bfloat16 or
    the CPU), and its matcher takes the flat groups where that rounding shows, not ordinary
    ones or bfloat16 cases."""
    check = get_check("groupnorm.moments")
    defect = gn_checks.CUDA_HALF_EPS_ROUNDED
    assert defect in check.defects_for(resolve("cuda-groupnorm-float16"))
    for name in (
        "cuda-groupnorm-autocast-fp16",
        "cuda-groupnorm-compile",
        "cuda-groupnorm-bfloat16",
        "torch-groupnorm-float16",
    ):
        assert defect not in check.defects_for(resolve(name)), name
    flat = defect.example
    assert defect.matches(flat)
    assert defect.matches(dataclasses.replace(flat, eps=3e-8))  # 1.9x off in float16
    ordinary = dataclasses.replace(flat, shape=(4, 8, 16, 16), num_groups=2, distribution="normal")
    assert not defect.matches(ordinary)
    assert not defect.matches(dataclasses.replace(ordinary, eps=1e-12))  # var dwarfs eps
    assert not defect.matches(dataclasses.replace(flat, dtype="bfloat16", param_dtype="bfloat16"))

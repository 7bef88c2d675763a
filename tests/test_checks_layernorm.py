"""LayerNorm checks: every real CPU target passes, the Triton kernel passes under the
interpreter, every planted bug is caught by the checks it names, a user's drop-in is checked in
its half-precision variants, and torch's known defects are still there (or the run says not)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers import slow_except
from normtests import QUICK, SMALL, cpu_targets, failures, write_module

from verify.adapters import layernorm as adapter
from verify.checks import get_check, rows
from verify.checks import layernorm as ln_checks
from verify.checks.base import run_check
from verify.mutants import catalog
from verify.resolve import resolve
from verify.result import Status
from verify.strategies.rows import RowCase, make_grad, make_input
from verify.targets import layernorm as ln_targets

FAMILY = "layernorm"


@pytest.mark.parametrize(
    "target, seed",
    [(t, 11 * i) for i, t in enumerate(cpu_targets(FAMILY))],
    ids=lambda v: v.name if hasattr(v, "name") else str(v),
)
def test_real_target_passes_every_check(target, seed):
    bad = failures(target, seed=seed)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "target",
    slow_except(cpu_targets(FAMILY, triton=True), lambda t: t.name == "triton-layernorm-bfloat16"),
    ids=lambda t: t.name,
)  # one kernel (bfloat16) in CI; every one in the slow tier
def test_triton_kernel_passes_every_check_under_the_interpreter(target):
    bad = failures(target, seed=3)
    assert not bad, "\n".join(bad)


def test_gpu_targets_skip_with_reason_here():
    gpu = [t for t in ln_targets.builtin() if t.device == "cuda" and "triton" not in t.requires]
    assert gpu
    for t in gpu:
        if t.unavailable() is None:
            pytest.skip("a CUDA device is present")
        r = run_check(ln_checks.CHECKS[0], t, SMALL)
        assert r.status == Status.SKIPPED and "CUDA" in r.message


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


class MyLayerNorm(torch.nn.LayerNorm):
    '''A user's drop-in layer norm, written outside the project.'''
"""


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_drop_in_written_outside_is_checked_in_half_precision(tmp_path, monkeypatch, dtype):
    write_module(tmp_path, monkeypatch, "userln", USER)
    template = resolve("userln:MyLayerNorm")
    assert template.family == FAMILY  # from its base class
    target = resolve(f"userln:MyLayerNorm[{dtype}, strided]")
    assert (target.dtype, target.layouts) == (dtype, ("strided", "expanded", "offset"))
    bad = failures(target, seed=5)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "defect, target",
    [
        (ln_checks.HALF_PARAM_GRAD_ACCUMULATION["bfloat16"], "torch-layernorm-bfloat16"),
        (ln_checks.HALF_PARAM_GRAD_ACCUMULATION["float16"], "torch-layernorm-float16"),
        (ln_checks.HALF_FLAT_ROW_DX, "torch-layernorm-float16"),
    ],
    ids=["dbias-bf16", "dbias-fp16", "flat-row-dx"],
)
def test_known_torch_defects_are_narrow_and_still_there(defect, target):
    target = resolve(target)
    check = get_check(defect.checks[0])
    assert defect in check.defects_for(target)
    assert defect.present(check, target)  # its example still fails on torch 2.13
    assert not check.defects_for(resolve("varguard-explicit-layernorm"))  # torch's alone
    r = run_check(check, target, SMALL, seed=2)
    assert r.status == Status.PASSED and "known defect still present" in r.message


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_torch_half_param_grads_replay_bit_for_bit(dtype):
    """The defect's matcher replays torch's half-precision dweight and dbias sums: equal to
    torch's bit for bit (at this process's thread count: 1 in a run's workers, 2 here under
    pytest-xdist or not) on a case whose dweight sum grows (dy ~ xhat over 1024 rows), where
    the replay is past the bound; the same case in float32 or without affine is not matched."""
    target = resolve(f"torch-layernorm-{dtype}")
    case = RowCase(shape=(1024, 16), kind="layer", dtype=dtype, grad_law="output", seed=8)
    run = adapter.step(target, case)
    replayed = rows.torch_half_layer_norm_param_grads(
        make_input(case),
        make_grad(case),
        eps=case.eps,
        dtype=dtype,
        param_dtype="float32",
        chunks=torch.get_num_threads(),
    )
    for name in ("dweight", "dbias"):
        np.testing.assert_array_equal(rows.output(run, name).ravel(), replayed[name])
    defect = ln_checks.HALF_PARAM_GRAD_ACCUMULATION[dtype]
    assert defect.matches(case)
    assert not defect.matches(dataclasses.replace(case, dtype="float32"))
    assert not defect.matches(dataclasses.replace(case, affine=False))


def test_half_dx_defect_covers_a_large_gradient_over_a_flat_row():
    """The sweep's seed-15 case: a (2,)-row of variance 2.4e-7, eps 1e-7, |dy| up to 55. torch
    returns dx (-inf, -27520) where the exact dx is (8131, -8131): still so, and matched by the
    float16 dx defect (max |dy| / sqrt(var + eps) = 9.5e4), not by its float32 twin."""
    case = RowCase(
        shape=(8193, 2),
        kind="layer",
        dtype="float16",
        param_dtype="float32",
        distribution="constant",
        seed=0,
        eps=1e-07,
        affine=False,
        bias=False,
        grad_law="offset",
    )
    target = resolve("torch-layernorm-float16")
    assert not get_check("layernorm.backward").measure(target, case).ok
    assert ln_checks.HALF_FLAT_ROW_DX.matches(case)
    assert not ln_checks.HALF_FLAT_ROW_DX.matches(dataclasses.replace(case, dtype="float32"))
    assert not ln_checks.HALF_FLAT_ROW_DX.matches(dataclasses.replace(case, grad_law="normal"))

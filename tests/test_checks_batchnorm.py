"""Batch-norm checks: every real CPU target passes, every planted bug is caught."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
from helpers import ENV

from verify.checks import batchnorm as bn_checks
from verify.checks.base import run_check
from verify.mutants import catalog
from verify.mutants.batchnorm import MUTANTS
from verify.profiles import get_profile
from verify.result import Status
from verify.targets import batchnorm as bn_targets

QUICK = get_profile("quick")
CPU_TARGETS = [t for t in bn_targets.builtin() if t.unavailable() is None]


def _run_all(target, seed):
    return [run_check(c, target, QUICK, seed=seed) for c in bn_checks.CHECKS]


@pytest.mark.parametrize(
    "target, seed",
    # One seed each here, a different one per target; the 20-seed sweep is measured apart
    # (README, "No false alarms").
    [(t, 7 * i) for i, t in enumerate(t for t in CPU_TARGETS if not t.compile)],
    ids=lambda v: v.name if hasattr(v, "name") else str(v),
)
def test_real_target_passes_every_check(target, seed):
    results = _run_all(target, seed)
    bad = [
        f"{r.check}: {r.status}: {r.message}"
        for r in results
        if r.status not in (Status.PASSED, Status.SKIPPED)
    ]
    assert not bad, "\n".join(bad)
    assert any(r.status == Status.PASSED for r in results)


@pytest.mark.parametrize("target", [t for t in CPU_TARGETS if t.compile], ids=lambda t: t.name)
@pytest.mark.slow
def test_compiled_target_is_exercised_and_passes(target):
    results = _run_all(target, 0)
    assert [r for r in results if r.status != Status.PASSED] == []
    assert all(r.examples > 0 for r in results)


def test_gpu_targets_skip_with_reason_here():
    gpu = [t for t in bn_targets.builtin() if t.device == "cuda"]
    assert gpu, "the catalog names cuDNN, native CUDA and SyncBatchNorm targets"
    for t in gpu:
        if t.unavailable() is None:
            pytest.skip("a CUDA device is present")
        r = run_check(bn_checks.CHECKS[0], t, QUICK)
        assert r.status == Status.SKIPPED and "CUDA" in r.message


@pytest.mark.parametrize(
    "mutant", [m for m in catalog() if m.family == "batchnorm"], ids=lambda m: m.name
)
def test_mutant_is_caught_by_its_checks(mutant):
    for name in mutant.caught_by:
        check = next(c for c in bn_checks.CHECKS if c.name == name)
        r = run_check(check, mutant.target, QUICK, seed=0)
        assert r.status == Status.FAILED, (
            f"{mutant.name} ({mutant.bug}) survived {name}: {r.message}"
        )
        assert r.counterexample and r.repro


def test_failure_carries_a_runnable_reproduction_script(tmp_path):
    mutant = next(m for m in MUTANTS if m.name == "bn_one_pass_variance")
    r = run_check(bn_checks.CHECKS[0], mutant.target, QUICK, seed=0)
    assert r.status == Status.FAILED
    assert "exceed the bound" in r.message and "allowed" in r.message
    script = tmp_path / "repro.py"
    script.write_text(r.repro)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=ENV
    )
    assert out.returncode == 1, out.stderr
    assert "exceed the bound" in out.stdout


def test_cpu_half_defects_name_torchs_own_cpu_float16_modules_only():
    """The two float16 defects of torch's CPU batch norm belong to torch's modules run on
    float16 input on the CPU (built-in or a drop-in variant of torch's own class), not to our
    closed-form float16 kernel, autocast, float32 or CUDA: elsewhere the same failure is a bug."""
    from verify.checks import get_check
    from verify.resolve import resolve

    backward = get_check("batchnorm.backward")
    defects = (bn_checks.FP16_NONCONTIGUOUS_BACKWARD_OVERFLOW, bn_checks.HALF_INVSTD_OVERFLOW)
    for name in ("torch-float16", "torch.nn:BatchNorm2d[float16, contiguous]"):
        for defect in defects:
            assert defect in backward.defects_for(resolve(name)), (name, defect.description)
    for name in (
        "torch-eager",
        "torch-autocast-bf16",
        "varguard-closed-form-float16",
        "cuda-autocast-fp16",
        "torch.nn:BatchNorm2d[bfloat16, contiguous]",
    ):
        for defect in defects:
            assert defect not in backward.defects_for(resolve(name)), (name, defect.description)


def test_cuda_half_defects_name_torchs_cuda_float16_targets_and_their_cases():
    """The two defects of torch's CUDA batch norm the first GPU run found (measured on an H200 by
    scripts/probe-cuda-bn): each names torch's own CUDA float16 modules only, and matches only
    the cases it was measured on (the one-element offset of x or dy; eval-mode backward)."""
    from verify.checks import get_check
    from verify.resolve import resolve
    from verify.strategies.batchnorm import BNCase

    misaligned, eval_grads = (
        bn_checks.CUDNN_HALF_MISALIGNED,
        bn_checks.CUDA_EVAL_BACKWARD_HALF_PARAM_GRADS,
    )
    forward, eval_bw = get_check("batchnorm.forward"), get_check("batchnorm.eval_backward")
    half = resolve("cuda-autocast-fp16")
    assert misaligned in forward.defects_for(half) and eval_grads in eval_bw.defects_for(half)
    for name in (
        "cuda-native",
        "cuda-cudnn",
        "cuda-compile",
        "torch-eager",
        "varguard-closed-form-float16",
    ):
        assert misaligned not in forward.defects_for(resolve(name)), name
        assert eval_grads not in eval_bw.defects_for(resolve(name)), name
    assert misaligned not in eval_bw.defects_for(half)  # eval mode never faulted
    case = BNCase(shape=(4, 3, 5, 6), dtype="float16")
    assert not misaligned.matches(case)
    assert misaligned.matches(dataclasses.replace(case, x_layout="offset"))
    assert misaligned.matches(dataclasses.replace(case, dy_layout="offset"))
    assert not misaligned.matches(dataclasses.replace(case, dtype="float32", x_layout="offset"))
    assert eval_grads.matches(case) and not eval_grads.matches(
        dataclasses.replace(case, dtype="float32")
    )
    train_only = dataclasses.replace(case, program=("train+backward", "eval"))
    assert not eval_grads.matches(train_only)
    assert eval_grads.matches(dataclasses.replace(case, program=("eval", "eval+backward")))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_the_misaligned_probe_says_absent_without_a_gpu():
    """The probe runs its script in a child (the fault poisons the process): where there is no
    GPU the script cannot fault, and the probe must not call that the defect."""
    bn_checks._cudnn_half_misaligned.cache_clear()
    assert not bn_checks._cudnn_half_misaligned()

"""Residual-block checks: every real target passes, every planted bug is caught."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from theory import blocks
from verify.adapters import residual as res_adapter
from verify.checks import residual as res_checks
from verify.checks.base import run_check
from verify.mutants.residual import MUTANTS
from verify.profiles import get_profile
from verify.result import Status
from verify.strategies.residual import BlockCase, StackCase, make_input
from verify.targets import residual as res_targets

QUICK = get_profile("quick")
CPU_TARGETS = [t for t in res_targets.builtin() if t.unavailable() is None]
CHECK_NAMES = {c.name for c in res_checks.CHECKS}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These blocks are tiny (a few thousand elements per op): OpenMP's fork/join costs more
    than it saves, and when the machine's 2 cores are shared it spins and slows every op ~10x.
    One intra-op thread for this module, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run_all(target, seed):
    return [run_check(c, target, QUICK, seed=seed) for c in res_checks.CHECKS]


def _assert_passes(results):
    bad = [
        f"{r.check}: {r.status}: {r.message}"
        for r in results
        if r.status not in (Status.PASSED, Status.SKIPPED)
    ]
    assert not bad, "\n".join(bad)
    # Only stochastic_depth may be skipped (blocks without drop-path); the rest ran cases.
    assert all(r.examples > 0 for r in results if r.status == Status.PASSED)
    assert {r.check for r in results if r.status == Status.SKIPPED} <= {"residual.stochastic_depth"}


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("target", [t for t in CPU_TARGETS if not t.compile], ids=lambda t: t.name)
def test_real_target_passes_every_check(target, seed):
    _assert_passes(_run_all(target, seed))


@pytest.mark.parametrize("target", [t for t in CPU_TARGETS if t.compile], ids=lambda t: t.name)
def test_compiled_target_is_exercised_and_passes(target):
    # Compiled cases reuse a few fixed shapes, so the second seed costs no recompilation.
    for seed in (0, 5):
        _assert_passes(_run_all(target, seed))


def test_catalog_names_the_brief_targets():
    names = {t.name for t in res_targets.builtin()}
    assert {
        "torch-basic-inplace",
        "torch-bottleneck-inplace",
        "torch-basic-channels-last",
        "torch-compile-basic",
        "torch-basic-drop-path",
    } <= names
    assert all(t.family == "residual" for t in res_targets.builtin())
    assert any(
        t.options.get("drop_path", 0) > 0 and "train" in t.modes and "eval" in t.modes
        for t in res_targets.builtin()
    )


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_mutant_is_caught_by_its_checks(mutant):
    assert mutant.caught_by and set(mutant.caught_by) <= CHECK_NAMES
    for name in mutant.caught_by:
        check = next(c for c in res_checks.CHECKS if c.name == name)
        r = run_check(check, mutant.target, QUICK, seed=0)
        assert r.status == Status.FAILED, (
            f"{mutant.name} ({mutant.bug}) survived {name}: {r.message}"
        )
        assert r.counterexample and r.repro


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_forward_bound_catches_a_one_percent_branch_error(mode):
    """The derived tolerance is not vacuous: the branch off by 1% (the planted drop-path bug is
    25%) is past it, while the float32 block itself is within it."""
    target = next(t for t in CPU_TARGETS if t.name == "torch-basic-inplace")
    case = BlockCase(batch=4, in_channels=8, planes=8, height=8, width=8, seed=11, mode=mode)
    ref = res_adapter.reference_block(target, 8, 8, 1, seed=case.seed)
    values = make_input(case)
    train = mode == "train"
    bound = blocks.block_forward_bound(ref, values, train=train)
    f, sc = blocks.branch_and_shortcut(ref, values, train=train)
    off = np.maximum(1.01 * f.v + sc.v, 0.0)
    assert np.max(np.abs(off - bound.v) / (bound.e + 1e-30)) > 1.0
    assert res_checks.measure_forward(target, case).ratio <= 1.0


def test_plain_control_lands_on_the_plain_side():
    """The gradient band discriminates: the same weights without shortcuts (float64 reference)
    grow like the plain theory, past the midpoint, while the target stays residual."""
    for target in CPU_TARGETS:
        if target.compile or target.name.endswith("channels-last"):
            continue
        g = res_checks.gradient_growth(target, StackCase(depth=8, replicates=2, seed=3))
        assert abs(g.measured - g.residual_prediction) < 0.5 * g.half_width, g
        assert abs(g.plain_control - g.plain_prediction) < g.half_width, g
        assert g.half_width > 1.0


def test_stream_regime_keeps_the_final_relu_inactive():
    """Samuelson's bound: the shifted input keeps x_l + F(x_l) > 0 at every depth, so the
    stacks measure x + F(x) exactly as theory.residual's recursion assumes."""
    target = CPU_TARGETS[0]
    case = StackCase(depth=8, batch=128, replicates=1, seed=9)
    _, values = res_checks.stack_replicate(target, case, 0)
    bound = case.depth * math.sqrt(case.batch - 1)
    assert values.min() > bound


def test_known_cases_cover_both_shortcuts_and_modes():
    target = CPU_TARGETS[0]
    cases = res_checks.known_blocks(target)
    assert {c.mode for c in cases} == {"train", "eval"}
    assert {c.stride for c in cases} == {1, 2}
    values = make_input(cases[0])
    assert values.shape == cases[0].input_shape and np.isfinite(values).all()

"""The init checks: every real sampler passes, every mutant is caught, and the laws, bounds and
intervals the checks use are theory's (and torch's)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from theory import sampling
from theory.sampling import FALSE_ALARM
from verify.adapters import init as adapter
from verify.checks import init as checks
from verify.checks.base import run_check
from verify.mutants import init as mutants
from verify.profiles import get_profile
from verify.result import Status
from verify.strategies.init import InitCase
from verify.targets import init as targets

QUICK = get_profile("quick")
TARGETS = targets.builtin()
CHECKS = {c.name: c for c in checks.CHECKS}


def _target(name: str):
    return next(t for t in TARGETS if t.name == name)


@pytest.mark.parametrize("check", checks.CHECKS, ids=lambda c: c.name)
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_real_samplers_pass(target, check):
    # Seed 0 everywhere and a second seed on the float32 samplers (the 60 s budget).
    for seed in (0, 7) if target.dtype == "float32" else (0,):
        _passes(target, check, seed)


def _passes(target, check, seed):
    result = run_check(check, target, QUICK, seed=seed)
    if check.name == "init.bounds" and target.options["law"] == "normal":
        assert result.status == Status.SKIPPED and "unbounded" in result.message
        return
    assert result.status == Status.PASSED, f"{result.message}\n{result.counterexample}"
    assert result.examples >= QUICK.examples  # known cases plus the drawn ones all ran


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=lambda m: m.name)
def test_mutants_are_caught(mutant):
    """Every check in caught_by fails the mutant, on its first known case (deterministically:
    non-square conv weights make a fan bug a factor 8 or more)."""
    assert mutant.caught_by and set(mutant.caught_by) <= set(CHECKS)
    for name in mutant.caught_by:
        result = run_check(CHECKS[name], mutant.target, QUICK, seed=0)
        assert result.status == Status.FAILED, f"{mutant.name} passed {name}: {result.message}"
        assert result.examples == 1, (name, result.examples)
        assert result.counterexample and result.repro  # a failure says how to reproduce it


# --- the laws are theory's, and equal torch's formulas ------------------------------------


@pytest.mark.parametrize("shape", [(64, 8, 3, 3), (300, 100), (6, 12, 3, 3, 3), (16, 4, 7)])
@pytest.mark.parametrize("gain", [1.0, 5.0 / 3.0])
def test_xavier_laws_equal_torch_formula(shape, gain):
    field = math.prod(shape[2:])
    fan_in, fan_out = shape[1] * field, shape[0] * field
    case = InitCase(shape=shape, gain=gain)
    uniform = checks.expected_law(_target("torch-xavier-uniform"), case)
    normal = checks.expected_law(_target("torch-xavier-normal"), case)
    assert (uniform.fan_in, uniform.fan_out) == (fan_in, fan_out)
    assert uniform.scale == pytest.approx(gain * math.sqrt(6.0 / (fan_in + fan_out)), rel=1e-15)
    assert normal.scale == pytest.approx(gain * math.sqrt(2.0 / (fan_in + fan_out)), rel=1e-15)
    assert uniform.variance == pytest.approx(normal.variance, rel=1e-14)  # a^2/3 = Glorot's
    assert "theory.init.xavier_uniform_bound" in uniform.bound


@pytest.mark.parametrize(
    ("nonlinearity", "a"),
    [
        ("relu", 0.0),
        ("leaky_relu", math.sqrt(5.0)),
        ("leaky_relu", 0.2),
        ("tanh", 0.0),
        ("selu", 0.0),
    ],
)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_laws_equal_torch_formula(nonlinearity, a, mode):
    shape = (64, 8, 3, 3)
    fan = 72 if mode == "fan_in" else 576
    gain = torch.nn.init.calculate_gain(nonlinearity, a)
    case = InitCase(shape=shape, a=a, mode=mode, nonlinearity=nonlinearity)
    uniform = checks.expected_law(_target("torch-kaiming-uniform"), case)
    normal = checks.expected_law(_target("torch-kaiming-normal"), case)
    assert uniform.scale == pytest.approx(gain * math.sqrt(3.0 / fan), rel=1e-14)
    assert normal.scale == pytest.approx(gain / math.sqrt(fan), rel=1e-14)
    for target in (_target("torch-kaiming-uniform"), _target("torch-kaiming-normal")):
        law = checks.expected_law(target, case)
        assert checks.reference_law(target, case).var() == pytest.approx(law.variance, rel=1e-12)


def test_torch_samples_reach_but_never_pass_the_bound():
    case = InitCase(shape=(8, 64, 5, 5), gain=math.sqrt(2.0), seed=3, samples=200_000)
    target = _target("torch-xavier-uniform")
    law = checks.expected_law(target, case)
    w = adapter.draw(target, case)
    shortfall, slack, t = checks.bound_interval(law, w.size, target.dtype)
    assert law.scale - shortfall <= np.abs(w).max() <= law.scale + slack
    assert slack / law.scale < 2 * 2.0**-24


# --- the statistics: alpha and power --------------------------------------------------------


def test_bound_shortfall_has_false_alarm_rate_alpha():
    n = 20_000
    _, _, t = checks.bound_interval(
        checks._law("xavier", "uniform", (3, 5), 1.0, 0.0, "fan_in", "leaky_relu"), n, "float32"
    )
    assert (1 - t) ** n == pytest.approx(FALSE_ALARM, rel=1e-9)
    assert t == pytest.approx(6.9e-4, rel=0.01)


@pytest.mark.parametrize("kind", ["normal", "uniform"])
def test_variance_interval_has_alpha_and_power(kind):
    n = 20_000
    assert 1 - sampling.variance_miss_probability(kind, n, 1.0) == pytest.approx(
        FALSE_ALARM, rel=0.05
    )
    # A 10% variance error is missed with probability < 2e-6; halving it, never.
    assert sampling.variance_miss_probability(kind, n, 1.1) < 2e-6
    assert sampling.variance_miss_probability(kind, n, 0.9) < 1e-8
    assert sampling.variance_miss_probability(kind, n, 0.5) < 1e-300


def test_uniform_variance_of_sample_variance_is_exact():
    """Var(s^2) = (mu4 - (n-3)/(n-1) sigma^4)/n for U(-1, 1), against simulation."""
    rng = np.random.default_rng(0)
    n = 50
    s2 = np.var(rng.uniform(-1, 1, size=(200_000, n)), axis=1, ddof=1)
    lo, hi = sampling.variance_ratio_interval("uniform", n, alpha=2 * 0.158655)  # +-1 sd
    assert np.std(s2 / (1 / 3)) == pytest.approx(hi - 1, rel=0.01)
    assert lo == pytest.approx(2 - hi)


def test_ks_critical_value_is_kolmogorovs():
    n = 20_000
    assert sampling.ks_critical(n) == pytest.approx(
        math.sqrt(-math.log(FALSE_ALARM / 2) / (2 * n)), rel=0.01
    )


def test_known_cases_are_non_square():
    for target in TARGETS:
        cases = checks.CHECKS[0].known(target)
        assert cases
        for case in cases:
            assert case.shape[0] != case.shape[1]
        assert any(len(c.shape) >= 4 and c.shape[0] >= 8 * c.shape[1] for c in cases)
        assert any(len(c.shape) >= 4 and c.shape[1] >= 8 * c.shape[0] for c in cases)


def test_user_sampler_without_law_is_skipped_with_reason():
    from verify.targets.base import Target

    target = Target(name="mine", family="init", factory=torch.nn.init.xavier_uniform_)
    result = run_check(CHECKS["init.variance"], target, QUICK, seed=0)
    assert result.status == Status.SKIPPED and "options" in result.message

"""The SELU and AlphaDropout checks: every real target passes, every mutant is caught, and the
constants, affine maps and bands the checks use are theory's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from theory import rounding
from theory import selu as theory_selu
from theory.sampling import FALSE_ALARM
from verify.checks import selu as checks
from verify.checks.base import run_check
from verify.mutants import selu as mutants
from verify.profiles import get_profile
from verify.result import Status
from verify.strategies.selu import FixedPointCase, ForwardCase, make_input
from verify.targets import selu as targets

QUICK = get_profile("quick")
TARGETS = targets.builtin()
CHECKS = {c.name: c for c in checks.CHECKS}
DROPOUT_CHECKS = ("selu.alpha_dropout_affine", "selu.alpha_dropout_moments")


def _applies(target, check) -> bool:
    return (check.name in DROPOUT_CHECKS) == (target.options["kind"] == "alpha_dropout")


@pytest.mark.parametrize("check", checks.CHECKS, ids=lambda c: c.name)
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_real_targets_pass(target, check):
    # Seed 0 everywhere; a second seed on torch's own float32 modules (the 60 s budget).
    seeds = (0, 11) if target.name in ("torch-selu", "torch-alpha-dropout") else (0,)
    for seed in seeds:
        result = run_check(check, target, QUICK, seed=seed)
        if not _applies(target, check):
            assert result.status == Status.SKIPPED and result.message
            return
        assert result.status == Status.PASSED, (
            f"seed {seed}: {result.message}\n{result.counterexample}"
        )


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=lambda m: m.name)
def test_mutants_are_caught(mutant):
    """Every check in caught_by fails the mutant, on its first known case (deterministic)."""
    assert mutant.caught_by and set(mutant.caught_by) <= set(CHECKS)
    for name in mutant.caught_by:
        result = run_check(CHECKS[name], mutant.target, QUICK, seed=0)
        assert result.status == Status.FAILED, f"{mutant.name} passed {name}: {result.message}"
        assert result.examples == 1, (name, result.examples)
        assert result.counterexample and result.repro


# --- the oracles the checks use are theory's -------------------------------------------------


def test_constants_are_the_published_ones():
    lam, alp = theory_selu.float_constants()
    assert lam == 1.0507009873554804934193349852946
    assert alp == 1.6732632423543772848170429916717
    # torch uses the same (its SELU at x = 1 is lambda to the last float64 bit)
    assert torch.selu(torch.tensor(1.0, dtype=torch.float64)).item() == lam


def test_dropout_affine_is_theorys_and_torchs():
    from theory import selu as theory_selu

    for p in (0.05, 0.25, 0.5):
        a, b, _ = theory_selu.alpha_dropout_float(p)
        a_t, b_t = theory_selu.alpha_dropout_affine(p)
        assert a == pytest.approx(float(a_t), rel=1e-15) and b == pytest.approx(
            float(b_t), rel=1e-15
        )
    a, b, ap = theory_selu.alpha_dropout_float(0.1)
    assert a == pytest.approx(0.921284516149711, abs=1e-15)
    assert b == pytest.approx(0.161970970057570, abs=1e-15)
    # ATen's _dropout_impl: a = 1/sqrt((alpha^2 p + 1)(1 - p)), alpha = 1.7580993408473766
    for p in (0.05, 0.1, 0.3, 0.5):
        a, b, ap = theory_selu.alpha_dropout_float(p)
        torch_a = 1.0 / math.sqrt((1.7580993408473766**2 * p + 1) * (1 - p))
        assert a == pytest.approx(torch_a, rel=1e-15)
        assert b == pytest.approx(1.7580993408473766 * torch_a * p, rel=1e-15)
        assert ap == pytest.approx(-1.7580993408473766, rel=1e-16)


def test_mapping_at_the_fixed_point_is_zero_one():
    from theory import selu as theory_selu

    mu, nu = theory_selu.mapping(0.0, 1.0, omega=0.0, tau=1.0)
    assert abs(float(mu)) < 1e-30 and float(nu) == pytest.approx(1.0, abs=1e-30)


def test_fixed_point_fourth_moment_against_monte_carlo():
    z = np.random.default_rng(0).standard_normal(2_000_000)
    lam, alp = theory_selu.float_constants()
    y = lam * np.where(z > 0, z, alp * np.expm1(np.minimum(z, 0)))
    m4 = theory_selu.fixed_point_fourth_moment()
    assert m4 == pytest.approx(np.mean(y**4), rel=0.01)
    assert m4 == pytest.approx(2.5031, abs=1e-3)


def test_fixed_point_band_is_bonferroni_over_layers():
    case = FixedPointCase(width=256, depth=32, batch=512)
    band_mu, band_nu, z = theory_selu.fixed_point_bands(
        width=case.width, batch=case.batch, depth=case.depth
    )
    assert z == pytest.approx(stats.norm.isf(FALSE_ALARM / 128))
    assert band_mu.shape == band_nu.shape == (32,)
    assert np.all(np.diff(band_nu) > 0)  # widens like a random walk with depth
    # at the first layer: 5.65 sqrt(2) sqrt(3/256^2 + 2.503/(512*256))
    assert band_nu[0] == pytest.approx(
        z * math.sqrt(2) * math.sqrt(3 / 256**2 + 2.5031 / 131072), rel=1e-4
    )


def test_forward_tolerance_catches_exp_minus_one():
    """At x = -1e-6 in float32, exp(x) - 1 is off by ~u/|x| relative: far past 8u."""
    x = torch.tensor([-1e-6, -3e-5], dtype=torch.float32)
    lam, alp = theory_selu.float_constants()
    bad = lam * alp * (torch.exp(x) - 1).double().numpy()
    good = lam * alp * np.expm1(x.double().numpy())
    assert np.all(np.abs(bad - good) > 10 * rounding.selu_forward_tolerance(good, "float32"))


def test_forward_inputs_reach_the_failure_modes():
    x = make_input(ForwardCase("mixed", 4096, 0.0, seed=1, dtype="float32"))
    fi = torch.finfo(torch.float32)
    assert np.any((x < 0) & (x > -1e-6))  # where exp(x) - 1 cancels
    assert np.any((x != 0) & (np.abs(x) < fi.tiny))  # subnormals
    assert np.max(np.abs(x)) > 1e30 and np.all(np.isfinite(1.0507 * x.astype(np.float32)))
    assert np.any(x <= -60) and np.any(np.signbit(x) & (x == 0))

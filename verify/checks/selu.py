"""SELU and AlphaDropout checks (Klambauer et al. 2017, "Self-Normalizing Neural Networks").

Deterministic checks (constants, forward, AlphaDropout's affine map) bound the error by the
working precision u of the target's dtype (theory.rounding.unit_roundoff). Statistical checks
(mapping, fixed point, AlphaDropout's moments) accept inside a confidence interval whose
false-alarm probability for a correct implementation is theory.sampling.FALSE_ALARM = 1e-6 per
case (Bonferroni over the quantities one case tests), so a quick run of the family (~50
statistical cases) fails by chance with probability < 1e-4.

theory/selu.py's constants are derived with SymPy (first use ~2 s): they are loaded lazily, so
importing the check registry stays fast.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from reference import selu as ref
from theory import rounding, sampling
from theory import selu as theory_selu
from theory.rounding import unit_roundoff
from theory.sampling import FALSE_ALARM
from verify.adapters import selu as adapter
from verify.assertions import EXACT, compare, worst
from verify.checks.base import Checks, Measurement
from verify.strategies.common import round_to
from verify.strategies.selu import (
    DEFAULT_SAMPLES,
    ConstantsCase,
    DropoutCase,
    FixedPointCase,
    ForwardCase,
    MappingCase,
    constants_cases,
    dropout_cases,
    dropout_input,
    fixed_point_cases,
    forward_cases,
    make_input,
    mapping_cases,
    mapping_input,
)
from verify.targets.base import Target

CHECKS = Checks("selu")


def _u(target: Target) -> float:
    return unit_roundoff(target.dtype)


def _activation(target: Target) -> str | None:
    if target.family != "selu":
        return f"a selu check; target family is {target.family!r}"
    k = adapter.kind(target)
    if k is None:
        return adapter.describe_missing(target)
    if k != "activation":
        return f"an activation check; {target.name} is {k} (selu.alpha_dropout_* apply)"
    return None


def _dropout(target: Target) -> str | None:
    if target.family != "selu":
        return f"a selu check; target family is {target.family!r}"
    k = adapter.kind(target)
    if k is None:
        return adapter.describe_missing(target)
    if k != "alpha_dropout":
        return f"an AlphaDropout check; {target.name} is an {k}"
    return None


# --- selu.constants ------------------------------------------------------------------------------


def _constants_known(target: Target) -> list[ConstantsCase]:
    return [ConstantsCase(log2_x=0, x_negative=-60.0), ConstantsCase(10, -1000.0)]


def _examples(profile) -> int:
    return profile.examples


@CHECKS.register(
    name="selu.constants",
    summary="selu(2^k) = lambda_01 2^k and selu(x <= -60) = -lambda_01 alpha_01 to 4 ulps",
    bound=(theory_selu.lambda01, theory_selu.alpha01, rounding.selu_constants_tolerance),
    cases=lambda target, profile: constants_cases(),
    known=_constants_known,
    applies=_activation,
    max_examples=_examples,
)
def measure_constants(target: Target, case: ConstantsCase) -> Measurement:
    x = np.array([2.0**case.log2_x, float(round_to(np.array([case.x_negative]), target.dtype)[0])])
    y = adapter.activate(target, x)
    lam_mp = theory_selu.lambda01()
    # selu(x) = lambda x exactly for x = 2^k; for x <= -60, -lambda alpha (1 - e^x) with
    # e^x < 9e-27, far below float64's resolution.
    expected = np.array([float(lam_mp * 2**case.log2_x), float(-lam_mp * theory_selu.alpha01())])
    allowed = rounding.selu_constants_tolerance(expected, target.dtype)
    c = compare(
        y,
        expected,
        allowed,
        bound=rounding.selu_constants_tolerance,
        what=f"selu at x = 2^{case.log2_x} (lambda_01 x) and x = {x[1]:g} (-lambda_01 alpha_01)",
    )
    return Measurement(c.ratio, c.message())


# --- selu.forward --------------------------------------------------------------------------------


def _forward_cases(target: Target, profile) -> st.SearchStrategy[ForwardCase]:
    return forward_cases(dtype=target.dtype)


def _forward_known(target: Target) -> list[ForwardCase]:
    d = target.dtype
    return [
        ForwardCase("mixed", 4096, 0.0, seed=1, dtype=d),
        ForwardCase("tiny_negative", 1024, 0.0, seed=2, dtype=d),  # where exp(x) - 1 cancels
        ForwardCase("subnormal", 256, 0.0, seed=3, dtype=d),
        ForwardCase("huge", 256, 0.0, seed=4, dtype=d),
        ForwardCase("saturated", 256, 0.0, seed=5, dtype=d),
    ]


@CHECKS.register(
    name="selu.forward",
    summary="elementwise against the float64 reference on tiny, subnormal, huge, negative "
    "and saturated inputs",
    bound=rounding.selu_forward_tolerance,
    cases=_forward_cases,
    known=_forward_known,
    applies=_activation,
    max_examples=_examples,
)
def measure_forward(target: Target, case: ForwardCase) -> Measurement:
    x = make_input(case)
    y = adapter.activate(target, x)
    expected = ref.selu(x)
    c = compare(
        y,
        expected,
        rounding.selu_forward_tolerance(expected, target.dtype),
        what=f"selu forward on {x.size} inputs ({case.law}, scale 10^{case.log10_scale:.2g})",
        bound=rounding.selu_forward_tolerance,
    )
    return Measurement(c.ratio, c.message())


# --- selu.mapping --------------------------------------------------------------------------------


def _mapping_cases(target: Target, profile) -> st.SearchStrategy[MappingCase]:
    return mapping_cases(samples=max(DEFAULT_SAMPLES, profile.statistical_samples))


def _mapping_known(target: Target) -> list[MappingCase]:
    return [
        MappingCase(mu=0.0, omega=0.0, nu=1.0, tau=1.0, seed=1),  # the fixed point: g = (0, 1)
        MappingCase(mu=0.1, omega=1.0, nu=1.5, tau=1.0, seed=2),  # z ~ N(0.1, 1.5)
        MappingCase(mu=-0.1, omega=1.0, nu=0.8, tau=1.0, seed=3),  # z ~ N(-0.1, 0.8)
        MappingCase(mu=0.1, omega=0.1, nu=1.5, tau=1.1, seed=4),  # Theorem 1's far corner
    ]


def _statistical_examples(profile) -> int:
    # Each case draws profile.statistical_samples values: a few cases cover the domain.
    return max(4, profile.examples // 2)


@CHECKS.register(
    name="selu.mapping",
    summary="Monte Carlo mean and variance of selu(z), z ~ N(mu omega, nu tau) on Theorem "
    "1's domain, inside a 1 - 1e-6 CLT band around g",
    bound=(theory_selu.mapping, sampling.moment_bands),
    cases=_mapping_cases,
    known=_mapping_known,
    applies=_activation,
    max_examples=_statistical_examples,
)
def measure_mapping(target: Target, case: MappingCase) -> Measurement:
    """mean and variance of selu(z), z ~ N(mu omega, nu tau), against g(mu, omega, nu, tau).

    Two two-sided tests at FALSE_ALARM/2 each (z = 5.03). Rounding moves the moments by at most the
    mean forward tolerance (and rounding z to the dtype by 1.76 u|z|, selu's Lipschitz
    constant lambda alpha): added to the bands, negligible at u = 2^-24.
    """
    z = mapping_input(case, target.dtype)
    y = adapter.activate(target, z)
    mean, s2, _ = sampling.sample_moments(y)
    mu_t, nu_t = theory_selu.mapping(case.mu, case.nu, omega=case.omega, tau=case.tau)
    zc = sampling.normal_quantile(FALSE_ALARM, 2)
    band_mean, band_var = sampling.moment_bands(y, zc)
    lam, alp = theory_selu.float_constants()
    tol = rounding.selu_forward_tolerance(y, target.dtype) + lam * alp * _u(target) * np.abs(z)
    band_mean += float(np.mean(tol))
    band_var += float(2 * np.mean(np.abs(y - mean) * tol) + np.mean(tol) ** 2)
    c = compare(
        np.array([mean, s2]),
        np.array([float(mu_t), float(nu_t)]),
        np.array([band_mean, band_var]),
        what=f"[mean, variance] of selu(z) over n = {y.size} samples, z ~ "
        f"N({case.input_mean:.4g}, {case.input_variance:.4g}) "
        f"(mu={case.mu:.4g}, omega={case.omega:.4g}, nu={case.nu:.4g}, "
        f"tau={case.tau:.4g})",
        bound=(theory_selu.mapping, sampling.moment_bands),
    )
    return Measurement(c.ratio, c.message())


# --- selu.fixed_point ----------------------------------------------------------------------------


def _fixed_point_known(target: Target) -> list[FixedPointCase]:
    return [FixedPointCase(width=256, depth=32, batch=256, seed=0)]


def _fixed_point_examples(profile) -> int:
    # ~0.3 s per 32-layer stack on 2 cores: one drawn case (plus the known one) when quick.
    return max(1, profile.examples // 12)


@CHECKS.register(
    name="selu.fixed_point",
    summary="32 layers of SELU(W x), LeCun-normal W, width >= 256: per-layer mean and "
    "variance stay in a sampling band around (0, 1)",
    bound=theory_selu.fixed_point_bands,
    cases=lambda target, profile: fixed_point_cases(),
    known=_fixed_point_known,
    applies=_activation,
    max_examples=_fixed_point_examples,
)
def measure_fixed_point(target: Target, case: FixedPointCase) -> Measurement:
    means, variances = adapter.deep_stack(
        target, width=case.width, depth=case.depth, batch=case.batch, seed=case.seed
    )
    band_mu, band_nu, z = theory_selu.fixed_point_bands(
        width=case.width, batch=case.batch, depth=case.depth
    )
    where = (
        f"{case.depth} layers SELU(W x), W ~ N(0, 1/{case.width}) (LeCun normal), batch "
        f"{case.batch}, x ~ N(0, 1), seed {case.seed}; index = layer - 1; band {z:.3g} "
        f"sqrt(layer + 1) x the per-layer sampling sd (alpha = {FALSE_ALARM:g} over all layers)"
    )
    bound = theory_selu.fixed_point_bands
    c = worst(
        compare(
            means,
            np.zeros(case.depth),
            band_mu,
            bound=bound,
            what=f"per-layer mean (theory: 0); {where}",
        ),
        compare(
            variances,
            np.ones(case.depth),
            band_nu,
            bound=bound,
            what=f"per-layer variance (theory: 1); {where}",
        ),
    )
    return Measurement(c.ratio, c.message())


# --- selu.alpha_dropout_affine ------------------------------------------------------------------


#: Values per affine case: enough that every p in [0.05, 0.5] drops and keeps hundreds of units.
AFFINE_SAMPLES = 4096


def _dropped_value(y: np.ndarray) -> tuple[float, int]:
    """The most frequent output value and its count: every dropped unit gets the same value
    a alpha' + b; a kept unit a x + b repeats it only if x does (float x from N(0, 1))."""
    values, counts = np.unique(y, return_counts=True)
    k = int(np.argmax(counts))
    return float(values[k]), int(counts[k])


def _affine_cases(target: Target, profile) -> st.SearchStrategy[DropoutCase]:
    return dropout_cases(samples=AFFINE_SAMPLES)


def _affine_known(target: Target) -> list[DropoutCase]:
    return [
        DropoutCase(p=p, samples=AFFINE_SAMPLES, seed=s)
        for s, p in enumerate((0.1, 0.05, 0.5), start=1)
    ]


@CHECKS.register(
    name="selu.alpha_dropout_affine",
    summary="AlphaDropout: dropped units = a alpha' + b, kept = a x + b with theory's a, b "
    "for p; eval mode is the identity",
    bound=(theory_selu.alpha_dropout_affine, rounding.alpha_dropout_tolerance),
    cases=_affine_cases,
    known=_affine_known,
    applies=_dropout,
    max_examples=_examples,
)
def measure_alpha_dropout_affine(target: Target, case: DropoutCase) -> Measurement:
    """Training: dropped units equal a alpha' + b, kept ones a x + b, with theory's (a, b) for
    p; eval: the identity, exactly."""
    x = dropout_input(case, target.dtype)
    y = adapter.alpha_dropout(target, x, p=case.p, seed=case.seed)
    a, b, ap = theory_selu.alpha_dropout_float(case.p)
    value, count = _dropped_value(y)
    if count < 2:
        return Measurement(
            math.inf,
            f"AlphaDropout(p={case.p}): no two outputs are equal among "
            f"{y.size}; dropped units must all take a alpha' + b = "
            f"{a * ap + b:.9g}",
        )
    dropped = y == value
    expected = np.where(dropped, a * ap + b, a * x + b)
    magnitude = np.abs(np.where(dropped, a * ap, a * x)) + abs(b)
    allowed = rounding.alpha_dropout_tolerance(magnitude, target.dtype)
    train = compare(
        y,
        expected,
        allowed,
        what=f"AlphaDropout(p={case.p:.6g}) training output ({int(dropped.sum())} "
        f"dropped -> a alpha' + b = {a * ap + b:.9g}, kept -> a x + b; "
        f"a = {a:.9g}, b = {b:.9g}, alpha' = {ap:.9g})",
        bound=(theory_selu.alpha_dropout_affine, rounding.alpha_dropout_tolerance),
    )
    y_eval = adapter.alpha_dropout(target, x, p=case.p, seed=case.seed, training=False)
    ident = compare(
        y_eval, x, 0.0, what=f"AlphaDropout(p={case.p:.6g}) in eval mode (identity)", bound=EXACT
    )
    c = worst(train, ident)
    return Measurement(c.ratio, c.message())


# --- selu.alpha_dropout_moments -----------------------------------------------------------------


def _moments_cases(target: Target, profile) -> st.SearchStrategy[DropoutCase]:
    return dropout_cases(samples=max(DEFAULT_SAMPLES, profile.statistical_samples))


def _moments_known(target: Target) -> list[DropoutCase]:
    return [DropoutCase(p=p, seed=s) for s, p in enumerate((0.1, 0.05, 0.5), start=1)]


@CHECKS.register(
    name="selu.alpha_dropout_moments",
    summary="AlphaDropout keeps N(0, 1) at mean 0 / variance 1 and drops a fraction p "
    "(1 - 1e-6 intervals)",
    bound=(theory_selu.alpha_dropout_affine, sampling.moment_bands, sampling.binomial_interval),
    cases=_moments_cases,
    known=_moments_known,
    applies=_dropout,
    max_examples=_statistical_examples,
)
def measure_alpha_dropout_moments(target: Target, case: DropoutCase) -> Measurement:
    """AlphaDropout keeps N(0, 1) input at mean 0, variance 1, and drops a fraction p.

    Three two-sided tests at FALSE_ALARM/3 each: mean and variance by the CLT with the sample's own
    4th moment (z = 5.10), the number of dropped units by the exact Binomial(n, p) quantiles.
    Power (n = 200,000, p in [0.05, 0.5]): without the shift b the mean is -b, from -0.084
    (p = 0.05) to -0.78 (p = 0.5), i.e. 37 to 350 standard errors (sd 0.0022): missed with
    probability < 1e-200. Dropping to -alpha_01 instead of alpha' keeps (0, 1) exactly (a and b
    are recomputed for it): only selu.alpha_dropout_affine sees that bug.
    """
    x = dropout_input(case, target.dtype)
    y = adapter.alpha_dropout(target, x, p=case.p, seed=case.seed)
    n = y.size
    mean, s2, _ = sampling.sample_moments(y)
    zc = sampling.normal_quantile(FALSE_ALARM, 3)
    band_mean, band_var = sampling.moment_bands(y, zc)
    a, b, ap = theory_selu.alpha_dropout_float(case.p)
    # The target's rounding moves the moments by at most this much.
    tol = rounding.alpha_dropout_tolerance(np.abs(a * x) + abs(a * ap) + abs(b), target.dtype)
    band_mean += float(np.mean(tol))
    band_var += float(2 * np.mean(np.abs(y - mean) * tol) + np.mean(tol) ** 2)
    c = compare(
        np.array([mean, s2]),
        np.array([0.0, 1.0]),
        np.array([band_mean, band_var]),
        what=f"[mean, variance] of AlphaDropout(p={case.p:.6g}) on n = {n} N(0, 1) "
        f"inputs, seed {case.seed}",
        bound=(theory_selu.alpha_dropout_affine, sampling.moment_bands),
    )
    _, count = _dropped_value(y)
    lo, hi = sampling.binomial_interval(n, case.p, FALSE_ALARM / 3)
    r_drop = sampling.ratio_in(count, n * case.p, lo, hi)
    if r_drop > c.ratio:
        return Measurement(
            r_drop,
            (
                f"AlphaDropout(p={case.p:.6g}): {count} of {n} units dropped (took one common "
                f"value), expected n p = {n * case.p:.1f}; Binomial(n, p) interval [{lo:.0f}, "
                f"{hi:.0f}] at alpha = {FALSE_ALARM:g} / 3; {c.message()}"
            ),
        )
    return Measurement(
        c.ratio, c.message() + f"; {count} of {n} dropped (interval [{lo:.0f}, {hi:.0f}])"
    )

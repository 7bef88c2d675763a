"""SELU and AlphaDropout checks (Klambauer et al. 2017, "Self-Normalizing Neural Networks").

Deterministic checks (constants, forward, AlphaDropout's affine map) bound the error by the
working precision u of the target's dtype (theory.rounding.unit_roundoff). Statistical checks
(mapping, fixed point, AlphaDropout's moments) accept inside a confidence interval whose
false-alarm probability for a correct implementation is ALPHA = 1e-6 per case (Bonferroni over
the quantities one case tests), so a quick run of the family (~50 statistical cases) fails by
chance with probability < 1e-4.

theory/selu.py's constants are derived with SymPy (first use ~2 s): they are loaded lazily, so
importing the check registry stays fast.
"""

from __future__ import annotations

import math
from functools import lru_cache

import mpmath
import numpy as np
import sympy as sp
import torch
from hypothesis import strategies as st
from scipy import integrate, stats

from theory import selu as theory_selu
from theory.rounding import unit_roundoff
from verify.assertions import compare, worst
from verify.checks.base import Check, Measurement
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
from verify.targets import selu as adapter
from verify.targets.base import Target

ALPHA = 1e-6
#: Error of selu(x) at x = 2^k (lambda rounded, one product: 2u) and x <= -60 (alpha and lambda
#: rounded and multiplied: 3u; expm1 = -1 exactly): a few ulps, 4u.
C_CONSTANTS = 4.0
#: Error of selu(x) in units of u|y|: lambda, alpha rounded to the dtype and multiplied (3u),
#: expm1 accurate to 1 ulp (<= 2u relative: SLEEF's u10 kernels, glibc), the final product (1u);
#: rounding the argument (x * input_scale, 1u) moves y by lambda alpha e^x u|x| <= u|y| because
#: |x| e^x <= |expm1(x)| for x < 0. 7u in all, taken as 8u. A kernel computing exp(x) - 1 has
#: relative error up to ~u/|x| near 0, past 8u for |x| below ~1/8.
C_FORWARD = 8.0
#: AlphaDropout (ATen's _dropout_impl): a = 1/sqrt((alpha'^2 p + 1)(1 - p)) in float64 (6
#: roundings), b's two constants rounded to the dtype and combined (4), a rounded (1), then
#: x * a + b (2): at most 13 roundings on any path, relative to |a x| + |b|; taken as 16.
C_DROPOUT = 16.0


@lru_cache(maxsize=1)
def constants() -> tuple[float, float]:
    """(lambda_01, alpha_01) from theory.selu, rounded once to float64."""
    return float(theory_selu.lambda01()), float(theory_selu.alpha01())


def _u(target: Target) -> float:
    return unit_roundoff(target.dtype)


def _eta(dtype: str) -> float:
    """Spacing of the subnormals of ``dtype``: the absolute error floor of one rounding."""
    fi = torch.finfo(getattr(torch, dtype))
    return float(fi.smallest_normal * fi.eps)


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


def _ratio_in(value: float, center: float, lo: float, hi: float) -> float:
    """How far ``value`` is from ``center`` in units of the interval's half on its side."""
    if value >= center:
        return (value - center) / (hi - center) if hi > center else math.inf
    return (center - value) / (center - lo) if center > lo else math.inf


# --- selu.constants ------------------------------------------------------------------------------


def measure_constants(target: Target, case: ConstantsCase) -> Measurement:
    x = np.array([2.0**case.log2_x, float(round_to(np.array([case.x_negative]), target.dtype)[0])])
    y = adapter.activate(target, x)
    lam_mp = theory_selu.lambda01()
    # selu(x) = lambda x exactly for x = 2^k; for x <= -60, -lambda alpha (1 - e^x) with
    # e^x < 9e-27, far below float64's resolution.
    expected = np.array([float(lam_mp * 2**case.log2_x), float(-lam_mp * theory_selu.alpha01())])
    allowed = C_CONSTANTS * _u(target) * np.abs(expected)
    c = compare(
        y,
        expected,
        allowed,
        bound="theory.selu.lambda01/alpha01, 4u",
        what=f"selu at x = 2^{case.log2_x} (lambda_01 x) and x = {x[1]:g} (-lambda_01 alpha_01)",
    )
    return Measurement(c.ratio, c.message())


def _constants_known(target: Target) -> list[ConstantsCase]:
    return [ConstantsCase(log2_x=0, x_negative=-60.0), ConstantsCase(10, -1000.0)]


# --- selu.forward --------------------------------------------------------------------------------


def forward_tolerance(y: np.ndarray, dtype: str) -> np.ndarray:
    """C_FORWARD u |y| + C_FORWARD eta for the target, plus the float64 reference's own error
    (the same model at u64), so float64 targets are not charged with the reference's."""
    u, u64 = unit_roundoff(dtype), unit_roundoff("float64")
    return C_FORWARD * (u + u64) * np.abs(y) + C_FORWARD * _eta(dtype)


def measure_forward(target: Target, case: ForwardCase) -> Measurement:
    from reference import selu as ref

    x = make_input(case)
    y = adapter.activate(target, x)
    expected = ref.selu(x)
    c = compare(
        y,
        expected,
        forward_tolerance(expected, target.dtype),
        what=f"selu forward on {x.size} inputs ({case.law}, scale 10^{case.log10_scale:.2g})",
        bound="8u|y| + 8 eta (expm1 to 1 ulp; theory.rounding.unit_roundoff) vs "
        "reference.selu.selu",
    )
    return Measurement(c.ratio, c.message())


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


# --- selu.mapping --------------------------------------------------------------------------------


def sample_moments(y: np.ndarray) -> tuple[float, float, float]:
    """(mean, unbiased variance, 4th central moment) in float64."""
    mean = float(np.mean(y))
    d = y - mean
    d2 = d * d
    return mean, float(d2.sum() / (y.size - 1)), float(np.mean(d2 * d2))


def moment_bands(y: np.ndarray, z: float) -> tuple[float, float]:
    """z standard errors of the sample mean and variance (CLT, with the sample's own 4th
    moment: Var(s^2) ~ (m4 - s^4)/n)."""
    n = y.size
    _, s2, m4 = sample_moments(y)
    return z * math.sqrt(s2 / n), z * math.sqrt(max(m4 - s2 * s2, 0.0) / n)


def measure_mapping(target: Target, case: MappingCase) -> Measurement:
    """mean and variance of selu(z), z ~ N(mu omega, nu tau), against g(mu, omega, nu, tau).

    Two two-sided tests at ALPHA/2 each (z = 5.03). Rounding moves the moments by at most the
    mean forward tolerance (and rounding z to the dtype by 1.76 u|z|, selu's Lipschitz
    constant lambda alpha): added to the bands, negligible at u = 2^-24.
    """
    z = mapping_input(case, target.dtype)
    y = adapter.activate(target, z)
    mean, s2, _ = sample_moments(y)
    mu_t, nu_t = theory_selu.mapping(case.mu, case.nu, omega=case.omega, tau=case.tau)
    zc = stats.norm.isf(ALPHA / 4)
    band_mean, band_var = moment_bands(y, zc)
    lam, alp = constants()
    tol = forward_tolerance(y, target.dtype) + lam * alp * _u(target) * np.abs(z)
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
        bound=f"theory.selu.mapping g = ({float(mu_t):.6g}, {float(nu_t):.6g}); CLT "
        f"band {zc:.3g} standard errors (alpha = {ALPHA:g})",
    )
    return Measurement(c.ratio, c.message())


def _mapping_cases(target: Target, profile) -> st.SearchStrategy[MappingCase]:
    return mapping_cases(samples=max(DEFAULT_SAMPLES, profile.statistical_samples))


def _mapping_known(target: Target) -> list[MappingCase]:
    return [
        MappingCase(mu=0.0, omega=0.0, nu=1.0, tau=1.0, seed=1),  # the fixed point: g = (0, 1)
        MappingCase(mu=0.1, omega=1.0, nu=1.5, tau=1.0, seed=2),  # z ~ N(0.1, 1.5)
        MappingCase(mu=-0.1, omega=1.0, nu=0.8, tau=1.0, seed=3),  # z ~ N(-0.1, 0.8)
        MappingCase(mu=0.1, omega=0.1, nu=1.5, tau=1.1, seed=4),  # Theorem 1's far corner
    ]


# --- selu.fixed_point ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def fixed_point_fourth_moment() -> float:
    """E[selu(z)^4], z ~ N(0, 1) (about 2.503), by quadrature with theory's constants."""
    lam, alp = constants()

    def f(t: float) -> float:
        y = lam * t if t > 0 else lam * alp * math.expm1(t)
        return y**4 * math.exp(-t * t / 2) / math.sqrt(2 * math.pi)

    return integrate.quad(f, -np.inf, 0)[0] + integrate.quad(f, 0, np.inf)[0]


def fixed_point_bands(case: FixedPointCase) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean band, variance band, z) per layer for a correct SELU at the fixed point (0, 1).

    One layer's sampling error, W the width and B the batch:
      variance: weight norms (sum of W^2 w_ij^2 ~ chi^2/W^2: relative sd sqrt(2)/W), random
        cross-unit correlations (w_j . w_k ~ N(0, 1/W): another 1/W^2) and the batch
        (Var(s^2) = (m4 - 1)/(BW) for the output, 1/(BW) for the input's cross moments):
        s_nu^2 = 3/W^2 + m4/(BW), m4 = E[selu(z)^4] = 2.503.
      mean: the batch mean of the output and of the pre-activation: s_mu^2 = 2/(BW).
    These errors accumulate through the layers, but every mode of the moment map contracts:
    the variance by J_nu,nu = 0.78 (theory.selu.jacobian), the mean by 0 (omega = 0), the
    inter-example correlation by E[selu'(z)]^2 = 0.97. So after layer l (and the input's own
    sampling) the deviation's variance is at most (l + 2) s^2: a random-walk bound.
    Bonferroni over 2 x depth two-sided tests: z = norm.isf(ALPHA / (4 depth)), 5.65 for 32.
    Validation, not calibration: over 200 stacks at W = 256, B = 256, 150 at W = 256, B = 512
    and 100 at W = 384, B = 384 (float32), the measured per-layer sd was at most 0.78
    (variance) and 0.52 (mean) of this bound, and the largest deviation 0.47 of the band.
    With W = 256, B = 256 the band is +-0.073 (variance) and +-0.044 (mean) at the first
    layer, +-0.30 and +-0.18 at the 32nd: lambda * ELU(x) with ELU's alpha = 1 (mean 0.17 at
    the first layer) is far outside.
    A SELU whose constants are rounded (1.67, 1.05) moves the fixed point of g to
    (-0.0004, 0.986) (theory.selu.mapping iterated with those constants): inside the band
    (weight sampling alone moves the variance by sqrt(2)/W per layer), so selu.constants and
    selu.forward catch that mutant, not this check; lambda * ELU(x) drifts to (0.005, 0.02).
    """
    w, b, depth = case.width, case.batch, case.depth
    s_nu = math.sqrt(3.0 / w**2 + fixed_point_fourth_moment() / (b * w))
    s_mu = math.sqrt(2.0 / (b * w))
    z = float(stats.norm.isf(ALPHA / (4 * depth)))
    steps = np.sqrt(np.arange(depth) + 2.0)
    return z * s_mu * steps, z * s_nu * steps, z


def measure_fixed_point(target: Target, case: FixedPointCase) -> Measurement:
    means, variances = adapter.deep_stack(
        target, width=case.width, depth=case.depth, batch=case.batch, seed=case.seed
    )
    band_mu, band_nu, z = fixed_point_bands(case)
    where = (
        f"{case.depth} layers SELU(W x), W ~ N(0, 1/{case.width}) (LeCun normal), batch "
        f"{case.batch}, x ~ N(0, 1), seed {case.seed}; index = layer - 1"
    )
    bound = (
        f"fixed point (0, 1) of theory.selu.mapping; band {z:.3g} sqrt(layer + 1) x the "
        f"per-layer sampling sd (alpha = {ALPHA:g} over all layers)"
    )
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


def _fixed_point_known(target: Target) -> list[FixedPointCase]:
    return [FixedPointCase(width=256, depth=32, batch=256, seed=0)]


# --- selu.alpha_dropout_affine ------------------------------------------------------------------


#: Values per affine case: enough that every p in [0.05, 0.5] drops and keeps hundreds of units.
AFFINE_SAMPLES = 4096


@lru_cache(maxsize=1)
def _affine_functions():
    """theory.selu's closed forms a(p, alpha'), b(p, alpha') as mpmath functions: the same
    expressions theory.selu.alpha_dropout_affine evaluates, without SymPy's evalf per call
    (0.15 s each)."""
    a_expr, b_expr = theory_selu.alpha_dropout_exprs()
    args = (theory_selu.p, theory_selu.alpha_p)
    return sp.lambdify(args, a_expr, "mpmath"), sp.lambdify(args, b_expr, "mpmath")


@lru_cache(maxsize=1024)
def dropout_affine(p: float) -> tuple[float, float, float]:
    """(a, b, alpha') of AlphaDropout for drop probability p, from theory.selu's derivation
    (alpha' = -lambda_01 alpha_01), at 30 digits and rounded once to float64."""
    f_a, f_b = _affine_functions()
    with mpmath.workdps(30):
        ap = -theory_selu.lambda01() * theory_selu.alpha01()
        pp = mpmath.mpf(p)
        return float(f_a(pp, ap)), float(f_b(pp, ap)), float(ap)


def _dropped_value(y: np.ndarray) -> tuple[float, int]:
    """The most frequent output value and its count: every dropped unit gets the same value
    a alpha' + b; a kept unit a x + b repeats it only if x does (float x from N(0, 1))."""
    values, counts = np.unique(y, return_counts=True)
    k = int(np.argmax(counts))
    return float(values[k]), int(counts[k])


def measure_alpha_dropout_affine(target: Target, case: DropoutCase) -> Measurement:
    """Training: dropped units equal a alpha' + b, kept ones a x + b, with theory's (a, b) for
    p; eval: the identity, exactly."""
    x = dropout_input(case, target.dtype)
    y = adapter.alpha_dropout(target, x, p=case.p, seed=case.seed)
    a, b, ap = dropout_affine(case.p)
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
    u = _u(target) + unit_roundoff("float64")  # the target's and the reference's roundings
    allowed = C_DROPOUT * u * (np.abs(np.where(dropped, a * ap, a * x)) + abs(b))
    train = compare(
        y,
        expected,
        allowed,
        what=f"AlphaDropout(p={case.p:.6g}) training output ({int(dropped.sum())} "
        f"dropped -> a alpha' + b = {a * ap + b:.9g}, kept -> a x + b; "
        f"a = {a:.9g}, b = {b:.9g}, alpha' = {ap:.9g})",
        bound="theory.selu.alpha_dropout_affine; 16u(|a x| + |b|)",
    )
    y_eval = adapter.alpha_dropout(target, x, p=case.p, seed=case.seed, training=False)
    ident = compare(
        y_eval, x, 0.0, what=f"AlphaDropout(p={case.p:.6g}) in eval mode (identity)", bound="exact"
    )
    c = worst(train, ident)
    return Measurement(c.ratio, c.message())


def _affine_cases(target: Target, profile) -> st.SearchStrategy[DropoutCase]:
    return dropout_cases(samples=AFFINE_SAMPLES)


def _affine_known(target: Target) -> list[DropoutCase]:
    return [
        DropoutCase(p=p, samples=AFFINE_SAMPLES, seed=s)
        for s, p in enumerate((0.1, 0.05, 0.5), start=1)
    ]


# --- selu.alpha_dropout_moments -----------------------------------------------------------------


def measure_alpha_dropout_moments(target: Target, case: DropoutCase) -> Measurement:
    """AlphaDropout keeps N(0, 1) input at mean 0, variance 1, and drops a fraction p.

    Three two-sided tests at ALPHA/3 each: mean and variance by the CLT with the sample's own
    4th moment (z = 5.10), the number of dropped units by the exact Binomial(n, p) quantiles.
    Power (n = 200,000, p in [0.05, 0.5]): without the shift b the mean is -b, from -0.084
    (p = 0.05) to -0.78 (p = 0.5), i.e. 37 to 350 standard errors (sd 0.0022): missed with
    probability < 1e-200. Dropping to -alpha_01 instead of alpha' keeps (0, 1) exactly (a and b
    are recomputed for it): only selu.alpha_dropout_affine sees that bug.
    """
    x = dropout_input(case, target.dtype)
    y = adapter.alpha_dropout(target, x, p=case.p, seed=case.seed)
    n = y.size
    mean, s2, _ = sample_moments(y)
    zc = float(stats.norm.isf(ALPHA / 6))
    band_mean, band_var = moment_bands(y, zc)
    a, b, ap = dropout_affine(case.p)
    # The target's rounding (C_DROPOUT u per value) moves the moments by at most this much.
    tol = C_DROPOUT * _u(target) * (np.abs(a * x) + abs(a * ap) + abs(b))
    band_mean += float(np.mean(tol))
    band_var += float(2 * np.mean(np.abs(y - mean) * tol) + np.mean(tol) ** 2)
    c = compare(
        np.array([mean, s2]),
        np.array([0.0, 1.0]),
        np.array([band_mean, band_var]),
        what=f"[mean, variance] of AlphaDropout(p={case.p:.6g}) on n = {n} N(0, 1) "
        f"inputs, seed {case.seed}",
        bound=f"theory.selu.alpha_dropout_affine keeps (0, 1); CLT band {zc:.3g} "
        f"standard errors (alpha = {ALPHA:g} with the drop count)",
    )
    _, count = _dropped_value(y)
    lo = float(stats.binom.ppf(ALPHA / 6, n, case.p))
    hi = float(stats.binom.isf(ALPHA / 6, n, case.p))
    r_drop = _ratio_in(count, n * case.p, lo, hi)
    if r_drop > c.ratio:
        return Measurement(
            r_drop,
            (
                f"AlphaDropout(p={case.p:.6g}): {count} of {n} units dropped (took one common "
                f"value), expected n p = {n * case.p:.1f}; Binomial(n, p) interval [{lo:.0f}, "
                f"{hi:.0f}] at alpha = {ALPHA:g} / 3; {c.message()}"
            ),
        )
    return Measurement(
        c.ratio, c.message() + f"; {count} of {n} dropped (interval [{lo:.0f}, {hi:.0f}])"
    )


def _moments_cases(target: Target, profile) -> st.SearchStrategy[DropoutCase]:
    return dropout_cases(samples=max(DEFAULT_SAMPLES, profile.statistical_samples))


def _moments_known(target: Target) -> list[DropoutCase]:
    return [DropoutCase(p=p, seed=s) for s, p in enumerate((0.1, 0.05, 0.5), start=1)]


def _examples(profile) -> int:
    return profile.examples


def _statistical_examples(profile) -> int:
    # Each case draws profile.statistical_samples values: a few cases cover the domain.
    return max(4, profile.examples // 2)


def _fixed_point_examples(profile) -> int:
    # ~0.3 s per 32-layer stack on 2 cores: one drawn case (plus the known one) when quick.
    return max(1, profile.examples // 12)


CHECKS = [
    Check(
        name="selu.constants",
        summary="selu(2^k) = lambda_01 2^k and selu(x <= -60) = -lambda_01 alpha_01 to 4 ulps",
        bound="theory.selu.lambda01 / alpha01; 4u (theory.rounding.unit_roundoff)",
        cases=lambda target, profile: constants_cases(),
        measure=measure_constants,
        known_cases=_constants_known,
        applies=_activation,
        max_examples=_examples,
    ),
    Check(
        name="selu.forward",
        summary="elementwise against the float64 reference on tiny, subnormal, huge, negative "
        "and saturated inputs",
        bound="reference.selu.selu; 8u|y| + 8 eta (expm1 to 1 ulp; theory.rounding)",
        cases=_forward_cases,
        measure=measure_forward,
        known_cases=_forward_known,
        applies=_activation,
        max_examples=_examples,
    ),
    Check(
        name="selu.mapping",
        summary="Monte Carlo mean and variance of selu(z), z ~ N(mu omega, nu tau) on Theorem "
        "1's domain, inside a 1 - 1e-6 CLT band around g",
        bound="theory.selu.mapping; CLT with the sample's 4th moment, alpha = 1e-6",
        cases=_mapping_cases,
        measure=measure_mapping,
        known_cases=_mapping_known,
        applies=_activation,
        max_examples=_statistical_examples,
    ),
    Check(
        name="selu.fixed_point",
        summary="32 layers of SELU(W x), LeCun-normal W, width >= 256: per-layer mean and "
        "variance stay in a sampling band around (0, 1)",
        bound="theory.selu fixed point (0, 1), Jacobian contraction; random-walk sampling band "
        "at alpha = 1e-6",
        cases=lambda target, profile: fixed_point_cases(),
        measure=measure_fixed_point,
        known_cases=_fixed_point_known,
        applies=_activation,
        max_examples=_fixed_point_examples,
    ),
    Check(
        name="selu.alpha_dropout_affine",
        summary="AlphaDropout: dropped units = a alpha' + b, kept = a x + b with theory's a, b "
        "for p; eval mode is the identity",
        bound="theory.selu.alpha_dropout_affine; 16u(|a x| + |b|)",
        cases=_affine_cases,
        measure=measure_alpha_dropout_affine,
        known_cases=_affine_known,
        applies=_dropout,
        max_examples=_examples,
    ),
    Check(
        name="selu.alpha_dropout_moments",
        summary="AlphaDropout keeps N(0, 1) at mean 0 / variance 1 and drops a fraction p "
        "(1 - 1e-6 intervals)",
        bound="theory.selu.alpha_dropout_affine; CLT and Binomial(n, p), alpha = 1e-6",
        cases=_moments_cases,
        measure=measure_alpha_dropout_moments,
        known_cases=_moments_known,
        applies=_dropout,
        max_examples=_statistical_examples,
    ),
]

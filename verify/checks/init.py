"""Initialisation checks: exact bounds, the variance, and the whole law of torch.nn.init samplers.

The law each sampler should follow comes from theory/init.py (fans, Glorot's and He's bounds and
standard deviations, torch's gains); the scipy.stats law for the Kolmogorov-Smirnov test from
reference/init_laws.py. A case draws ``n = case.samples`` values from fresh tensors of one shape
(the profile's statistical_samples / 10, 20,000 in the quick profile).

False alarms. Every statistical decision has a false-alarm probability ALPHA = 1e-6 for a
correct sampler (stated per check below), so a quick run of ~17 cases x 3 checks x 6 targets
fails by chance with probability < 3e-4, and a 20-seed sweep < 7e-3.

Power of init.variance at n = 20,000: the probability that it misses a sampler whose variance is
``factor`` x theory's (``variance_miss_probability``; tests/test_checks_init.py asserts these):

==============================  =======================  ========================
factor                          normal law (chi-square)  uniform law (4th moment)
==============================  =======================  ========================
1.10 (a 10% error)              1.7e-6                   1.6e-23
0.90                            7.7e-9                   3.6e-34
0.50 (sqrt(3) for sqrt(6))      < 1e-300                 < 1e-300
==============================  =======================  ========================

so a 10% variance error is caught with probability >= 0.999998 per case, and the mutants (which
halve the variance, scale it by fan_out/fan_in = 8 or 1/8 in the known cases, by the receptive
field 7 to 27, or triple it) with certainty for every practical purpose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from hypothesis import strategies as st
from scipy import stats

from reference import init_laws
from theory import init as theory_init
from theory.rounding import unit_roundoff
from verify.checks.base import Check, Measurement
from verify.strategies.init import DEFAULT_SAMPLES, InitCase, init_cases
from verify.targets import init as adapter
from verify.targets.base import Target

#: False-alarm probability of each statistical decision (per case) for a correct sampler.
ALPHA = 1e-6


# --- the law a target should sample, from theory -------------------------------------------


@dataclass(frozen=True)
class Law:
    kind: str  # "uniform" or "normal"
    scale: float  # the bound a of U(-a, a), or the standard deviation of N(0, std^2)
    variance: float
    fan_in: int
    fan_out: int
    gain: float
    formula: str
    bound: str  # the theory function it came from

    def describe(self) -> str:
        what = "bound a" if self.kind == "uniform" else "std"
        return (
            f"{self.kind} law, {what} = {self.formula} = {self.scale:.6g} ({self.bound}; "
            f"fan_in={self.fan_in}, fan_out={self.fan_out}, gain={self.gain:.6g})"
        )


def expected_law(target: Target, case: InitCase) -> Law:
    scheme, kind = adapter.scheme_and_law(target)
    return _law(scheme, kind, case.shape, case.gain, case.a, case.mode, case.nonlinearity)


@lru_cache(maxsize=4096)
def _law(
    scheme: str,
    kind: str,
    shape: tuple[int, ...],
    gain: float,
    a: float,
    mode: str,
    nonlinearity: str,
) -> Law:
    fi, fo = theory_init.fan_in(shape), theory_init.fan_out(shape)
    if scheme == "xavier":
        if kind == "uniform":
            scale = theory_init.xavier_uniform_bound(fi, fo, gain=gain)
            formula, bound = "gain*sqrt(6/(fan_in+fan_out))", "theory.init.xavier_uniform_bound"
        else:
            scale = theory_init.xavier_normal_std(fi, fo, gain=gain)
            formula, bound = "gain*sqrt(2/(fan_in+fan_out))", "theory.init.xavier_normal_std"
    else:
        gain = theory_init.torch_gain(nonlinearity, param=a)
        fan = fi if mode == "fan_in" else fo
        if kind == "uniform":
            scale = theory_init.kaiming_uniform_bound(fan, gain=gain)
            formula, bound = f"gain*sqrt(3/{mode})", "theory.init.kaiming_uniform_bound"
        else:
            scale = theory_init.kaiming_normal_std(fan, gain=gain)
            formula, bound = f"gain/sqrt({mode})", "theory.init.kaiming_normal_std"
        bound += f" (gain = theory.init.torch_gain({nonlinearity!r}, {a!r}))"
    variance = scale**2 / 3.0 if kind == "uniform" else scale**2
    return Law(kind, scale, variance, fi, fo, gain, formula, bound)


def reference_law(target: Target, case: InitCase):
    """The frozen scipy.stats law from reference/init_laws.py (for the KS test)."""
    scheme, kind = adapter.scheme_and_law(target)
    if scheme == "xavier":
        fn = init_laws.xavier_uniform if kind == "uniform" else init_laws.xavier_normal
        return fn(case.shape, gain=case.gain)
    fn = init_laws.kaiming_uniform if kind == "uniform" else init_laws.kaiming_normal
    return fn(case.shape, a=case.a, mode=case.mode, nonlinearity=case.nonlinearity)


# --- cases -------------------------------------------------------------------------------------


def _cases(target: Target, profile) -> st.SearchStrategy[InitCase]:
    scheme, _ = adapter.scheme_and_law(target)
    return init_cases(
        scheme=scheme, samples=max(DEFAULT_SAMPLES, profile.statistical_samples // 10)
    )


def _known(target: Target) -> list[InitCase]:
    """Non-square conv and linear weights: fan_out/fan_in is 8 or 1/8 in the first two, so a
    swapped fan moves the variance 8-fold and the uniform bound sqrt(8)-fold either way; a
    sampler that ignores the receptive field is off by 9 to 27 (3x3, 3x3x3 kernels)."""
    if adapter.scheme_and_law(target) is None:
        return []
    scheme, _ = adapter.scheme_and_law(target)
    if scheme == "xavier":
        return [
            InitCase(shape=(64, 8, 3, 3), gain=1.0, seed=1),
            InitCase(shape=(8, 64, 5, 5), gain=math.sqrt(2.0), seed=2),
            InitCase(shape=(300, 100), gain=1.0, seed=3),
            InitCase(shape=(16, 4, 7), gain=5.0 / 3.0, seed=4),
            InitCase(shape=(6, 12, 3, 3, 3), gain=0.75, seed=5),
        ]
    return [
        InitCase(shape=(64, 8, 3, 3), mode="fan_in", nonlinearity="relu", seed=1),
        InitCase(shape=(8, 64, 3, 3), mode="fan_in", nonlinearity="leaky_relu", a=0.2, seed=2),
        InitCase(shape=(64, 8, 3, 3), mode="fan_out", nonlinearity="relu", seed=3),
        # torch.nn.Linear's own reset_parameters: kaiming_uniform_(a=sqrt(5)).
        InitCase(
            shape=(300, 100), mode="fan_in", nonlinearity="leaky_relu", a=math.sqrt(5.0), seed=4
        ),
        InitCase(shape=(6, 12, 3, 3, 3), mode="fan_out", nonlinearity="leaky_relu", a=0.01, seed=5),
    ]


def _applies(target: Target) -> str | None:
    if target.family != "init":
        return f"an init check; target family is {target.family!r}"
    if adapter.scheme_and_law(target) is None:
        return adapter.describe_missing(target)
    return None


def _applies_uniform(target: Target) -> str | None:
    reason = _applies(target)
    if reason:
        return reason
    if adapter.scheme_and_law(target)[1] != "uniform":
        return "the normal law is unbounded: no bound to check (init.variance and init.ks apply)"
    return None


def _where(case: InitCase) -> str:
    return (
        f"n = {case.tensors * case.numel} values from {case.tensors} tensor(s) of shape "
        f"{case.shape}, seed {case.seed}"
    )


# --- init.bounds -------------------------------------------------------------------------------


def bound_interval(law: Law, n: int, dtype: str) -> tuple[float, float, float]:
    """(shortfall, slack, t) for max|w| over n samples of U(-a, a) stored in ``dtype``: the
    samples must lie in [a - shortfall, a + slack].

    Upper: torch computes a in float64 in at most 8 roundings (Kaiming: the gain
    sqrt(2/(1 + a^2)) 4, gain/sqrt(fan) 2, times sqrt(3) 2; Xavier: 5), then draws
    from + (to - from) * x with x in [0, 1); rounding is monotone, so every |w| <= fl(a) <=
    a (1 + u)(1 + u64)^8 exactly, no statistics involved. One more (1 + u64) for the rounding of
    theory's a to the float64 ``law.scale``: slack = a ((1 + u)(1 + u64)^9 - 1).
    Lower: |w|/a ~ U(0, 1), so P(max|w| < a (1 - t)) = (1 - t)^n; t = 1 - ALPHA^(1/n) makes that
    ALPHA (t = 6.9e-4 at n = 20,000): the samples must reach the bound, or it is not the bound.
    """
    u, u64 = unit_roundoff(dtype), unit_roundoff("float64")
    t = -math.expm1(math.log(ALPHA) / n)
    slack = law.scale * math.expm1(math.log1p(u) + 9 * math.log1p(u64))
    return law.scale * t, slack, t


def measure_bounds(target: Target, case: InitCase) -> Measurement:
    law = expected_law(target, case)
    w = adapter.draw(target, case)
    a = law.scale
    shortfall, slack, t = bound_interval(law, w.size, target.dtype)
    peak = float(np.max(np.abs(w))) if w.size else 0.0
    if not math.isfinite(peak):
        return Measurement(math.inf, f"init.bounds: non-finite sample; {_where(case)}")
    # peak - a is exact (Sterbenz) near a; ratio is how far past either edge, in edge widths.
    ratio = max(max(0.0, peak - a) / slack, max(0.0, a - peak) / shortfall)
    verdict = "within" if ratio <= 1 else "outside"
    return Measurement(
        ratio,
        (
            f"init.bounds: max|w| = {peak:.9g} = {peak / a:.9f} a, {verdict} "
            f"[a(1 - t), a(1 + u)(1 + u64)^9] = [{a - shortfall:.9g}, {a + slack:.9g}], "
            f"t = {t:.3g} "
            f"(P(max|w| < a(1 - t)) = alpha = {ALPHA:g}); {law.describe()}; {_where(case)}"
        ),
    )


# --- init.variance -----------------------------------------------------------------------------


def variance_interval(kind: str, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Two-sided interval for s^2/sigma^2 (unbiased sample variance over theory's variance)
    that a correct sampler leaves with probability alpha.

    normal: (n-1) s^2/sigma^2 ~ chi^2(n-1), exactly.
    uniform: Var(s^2) = (mu4 - (n-3)/(n-1) sigma^4)/n with mu4/sigma^4 = 9/5 for U(-a, a)
    (mu4 = a^4/5, sigma^2 = a^2/3), and s^2 normal by the CLT (skewness O(n^-1/2): at n = 2e4
    the tail probability is alpha to within tens of percent).
    """
    if kind == "normal":
        dof = n - 1
        return (stats.chi2.ppf(alpha / 2, dof) / dof, stats.chi2.isf(alpha / 2, dof) / dof)
    sd = math.sqrt((9.0 / 5.0 - (n - 3) / (n - 1)) / n)
    z = stats.norm.isf(alpha / 2)
    return 1.0 - z * sd, 1.0 + z * sd


def variance_miss_probability(kind: str, n: int, factor: float, alpha: float = ALPHA) -> float:
    """P(init.variance accepts) when the sampler's true variance is ``factor`` x theory's: one
    minus the test's power (computed directly, so tiny values do not round to 0)."""
    lo, hi = variance_interval(kind, n, alpha)
    if kind == "normal":
        dof = n - 1
        law = stats.chi2(dof, scale=factor / dof)  # s^2/sigma0^2 = factor chi^2(n-1)/(n-1)
    else:
        law = stats.norm(factor, factor * math.sqrt((9.0 / 5.0 - (n - 3) / (n - 1)) / n))
    # P(lo <= X <= hi), from the tail that keeps digits when the law sits outside [lo, hi].
    if law.median() < lo:
        return float(max(law.sf(lo) - law.sf(hi), 0.0))
    return float(max(law.cdf(hi) - law.cdf(lo), 0.0))


def measure_variance(target: Target, case: InitCase) -> Measurement:
    law = expected_law(target, case)
    w = adapter.draw(target, case)
    n = w.size
    if n < 2:
        return Measurement(math.inf, f"init.variance: {n} sample(s); {_where(case)}")
    s2 = float(np.var(w, ddof=1))
    r = s2 / law.variance
    lo, hi = variance_interval(law.kind, n)
    ratio = (r - 1.0) / (hi - 1.0) if r >= 1.0 else (1.0 - r) / (1.0 - lo)
    if not math.isfinite(ratio):
        ratio = math.inf
    test = (
        "chi-square(n-1)"
        if law.kind == "normal"
        else "normal approx. with Var(s^2) = (mu4 - (n-3)/(n-1) sigma^4)/n"
    )
    return Measurement(
        ratio,
        (
            f"init.variance: sample variance {s2:.6g} = {r:.5f} x theory's {law.variance:.6g}; "
            f"two-sided interval for the ratio [{lo:.5f}, {hi:.5f}] ({test}, alpha = {ALPHA:g}); "
            f"{law.describe()}; {_where(case)}"
        ),
    )


# --- init.ks -----------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def ks_critical(n: int, alpha: float = ALPHA) -> float:
    """D with P(D_n > D) = alpha for the exact two-sided one-sample KS statistic."""
    return float(stats.kstwo.isf(alpha, n))


def measure_ks(target: Target, case: InitCase) -> Measurement:
    law = expected_law(target, case)
    ref = reference_law(target, case)
    w = adapter.draw(target, case)
    if not np.all(np.isfinite(w)):
        return Measurement(math.inf, f"init.ks: non-finite sample; {_where(case)}")
    result = stats.kstest(w, ref.cdf)
    d_crit = ks_critical(w.size)
    ratio = float(result.statistic) / d_crit
    return Measurement(
        ratio,
        (
            f"init.ks: Kolmogorov-Smirnov D = {result.statistic:.5f} (p = {result.pvalue:.3g}) "
            f"against the reference law (reference.init_laws); critical D = {d_crit:.5f} at "
            f"alpha = {ALPHA:g}; {law.describe()}; {_where(case)}"
        ),
    )


def _examples(profile) -> int:
    return profile.examples


CHECKS = [
    Check(
        name="init.bounds",
        summary="uniform samplers: every |w| <= a (theory's bound, float rounding allowed), and "
        "the samples reach a (P(max|w| < a(1-t)) = 1e-6)",
        bound="theory.init.xavier_uniform_bound / kaiming_uniform_bound; a(1+u)(1+u64)^9 "
        "(theory.rounding.unit_roundoff)",
        cases=_cases,
        measure=measure_bounds,
        known_cases=_known,
        applies=_applies_uniform,
        max_examples=_examples,
    ),
    Check(
        name="init.variance",
        summary="sample variance inside a two-sided 1 - 1e-6 interval around theory's variance "
        "(chi-square for normal laws, 4th-moment CLT for uniform ones)",
        bound="theory.init (variance gain^2*2/(fan_in+fan_out), gain^2/fan); chi-square / "
        "Var(s^2) = (mu4 - (n-3)/(n-1) sigma^4)/n at alpha = 1e-6",
        cases=_cases,
        measure=measure_variance,
        known_cases=_known,
        applies=_applies,
        max_examples=_examples,
    ),
    Check(
        name="init.ks",
        summary="Kolmogorov-Smirnov test of the samples against U(-a, a) or N(0, std^2), "
        "rejecting at p < 1e-6",
        bound="reference.init_laws (scipy.stats law); scipy.stats.kstwo critical D at 1e-6",
        cases=_cases,
        measure=measure_ks,
        known_cases=_known,
        applies=_applies,
        max_examples=_examples,
    ),
]

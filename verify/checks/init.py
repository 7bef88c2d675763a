"""Initialisation checks: exact bounds, the variance, and the whole law of torch.nn.init samplers.

The law each sampler should follow comes from theory/init.py (fans, Glorot's and He's bounds and
standard deviations, torch's gains); the scipy.stats law for the Kolmogorov-Smirnov test from
reference/init_laws.py. A case draws ``n = case.samples`` values from fresh tensors of one shape
(the profile's statistical_samples / 10, 20,000 in the quick profile).

False alarms. Every statistical decision has a false-alarm probability FALSE_ALARM = 1e-6 for a
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
from theory import rounding, sampling
from theory.sampling import FALSE_ALARM
from verify.adapters import init as adapter
from verify.assertions import describe_bound
from verify.checks.base import Checks, Measurement
from verify.strategies.init import DEFAULT_SAMPLES, InitCase, init_cases
from verify.targets.base import Target

CHECKS = Checks("init")


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
            fn, formula = theory_init.xavier_uniform_bound, "gain*sqrt(6/(fan_in+fan_out))"
        else:
            fn, formula = theory_init.xavier_normal_std, "gain*sqrt(2/(fan_in+fan_out))"
        scale, bound = fn(fi, fo, gain=gain), describe_bound(fn)
    else:
        gain = theory_init.torch_gain(nonlinearity, param=a)
        fan = fi if mode == "fan_in" else fo
        if kind == "uniform":
            fn, formula = theory_init.kaiming_uniform_bound, f"gain*sqrt(3/{mode})"
        else:
            fn, formula = theory_init.kaiming_normal_std, f"gain/sqrt({mode})"
        scale = fn(fan, gain=gain)
        bound = (
            f"{describe_bound(fn)} (gain = {describe_bound(theory_init.torch_gain)}"
            f"({nonlinearity!r}, {a!r}))"
        )
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
    samples must lie in [a - shortfall, a + slack]. Upper: theory.rounding.uniform_bound_slack
    (rounding only, no statistics). Lower: theory.sampling.uniform_max_shortfall at FALSE_ALARM:
    the samples must reach the bound, or it is not the bound."""
    t = sampling.uniform_max_shortfall(n)
    return law.scale * t, rounding.uniform_bound_slack(law.scale, dtype), t


def _examples(profile) -> int:
    return profile.examples


@CHECKS.register(
    name="init.bounds",
    summary="uniform samplers: every |w| <= a (theory's bound, float rounding allowed), and "
    "the samples reach a (P(max|w| < a(1-t)) = 1e-6)",
    bound=(
        theory_init.xavier_uniform_bound,
        theory_init.kaiming_uniform_bound,
        rounding.uniform_bound_slack,
        sampling.uniform_max_shortfall,
    ),
    cases=_cases,
    known=_known,
    applies=_applies_uniform,
    max_examples=_examples,
)
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
            f"(P(max|w| < a(1 - t)) = alpha = {FALSE_ALARM:g}); {law.describe()}; {_where(case)}"
        ),
    )


# --- init.variance -----------------------------------------------------------------------------


@CHECKS.register(
    name="init.variance",
    summary="sample variance inside a two-sided 1 - 1e-6 interval around theory's variance "
    "(chi-square for normal laws, 4th-moment CLT for uniform ones)",
    bound=(
        theory_init.xavier_variance_expr,
        theory_init.kaiming_normal_std_expr,
        sampling.variance_ratio_interval,
    ),
    cases=_cases,
    known=_known,
    applies=_applies,
    max_examples=_examples,
)
def measure_variance(target: Target, case: InitCase) -> Measurement:
    law = expected_law(target, case)
    w = adapter.draw(target, case)
    n = w.size
    if n < 2:
        return Measurement(math.inf, f"init.variance: {n} sample(s); {_where(case)}")
    s2 = float(np.var(w, ddof=1))
    r = s2 / law.variance
    lo, hi = sampling.variance_ratio_interval(law.kind, n)
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
            f"two-sided interval for the ratio [{lo:.5f}, {hi:.5f}] ({test}, "
            f"alpha = {FALSE_ALARM:g}); {law.describe()}; {_where(case)}"
        ),
    )


# --- init.ks -----------------------------------------------------------------------------------


@CHECKS.register(
    name="init.ks",
    summary="Kolmogorov-Smirnov test of the samples against U(-a, a) or N(0, std^2), "
    "rejecting at p < 1e-6",
    bound=sampling.ks_critical,
    cases=_cases,
    known=_known,
    applies=_applies,
    max_examples=_examples,
)
def measure_ks(target: Target, case: InitCase) -> Measurement:
    law = expected_law(target, case)
    ref = reference_law(target, case)
    w = adapter.draw(target, case)
    if not np.all(np.isfinite(w)):
        return Measurement(math.inf, f"init.ks: non-finite sample; {_where(case)}")
    result = stats.kstest(w, ref.cdf)
    d_crit = sampling.ks_critical(w.size)
    ratio = float(result.statistic) / d_crit
    return Measurement(
        ratio,
        (
            f"init.ks: Kolmogorov-Smirnov D = {result.statistic:.5f} (p = {result.pvalue:.3g}) "
            f"against the reference law (reference.init_laws); critical D = {d_crit:.5f} at "
            f"alpha = {FALSE_ALARM:g}; {law.describe()}; {_where(case)}"
        ),
    )

"""Statistical bands for sampled quantities: the one false-alarm rate and the intervals built on it.

Every statistical check in varguard accepts inside a band that a correct implementation leaves
with probability :data:`FALSE_ALARM` per case (DESIGN.md: about 1e-6 per test), split by
Bonferroni over the quantities one case tests. The functions here turn that rate into intervals
(chi-square, Student t, normal, binomial, Kolmogorov-Smirnov) and say how much power they keep.
No oracles: these are textbook laws, evaluated with scipy.stats.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import stats

#: False-alarm probability of each statistical decision (per case) for a correct implementation.
FALSE_ALARM = 1e-6


def normal_quantile(alpha: float, tests: int = 1, *, two_sided: bool = True) -> float:
    """z with P(|Z| > z) = alpha / tests (two-sided) or P(Z > z) = alpha / tests."""
    return float(stats.norm.isf(alpha / tests / (2 if two_sided else 1)))


def student_t_quantile(alpha: float, dof: int, tests: int = 1) -> float:
    """t with P(|T_dof| > t) = alpha / tests: Bonferroni over ``tests`` two-sided t tests."""
    return float(stats.t.ppf(1 - alpha / (2 * tests), dof))


def binomial_interval(n: int, p: float, alpha: float) -> tuple[float, float]:
    """[lo, hi] holding a Binomial(n, p) count with probability >= 1 - alpha (exact quantiles,
    alpha/2 in each tail)."""
    return float(stats.binom.ppf(alpha / 2, n, p)), float(stats.binom.isf(alpha / 2, n, p))


def binomial_two_sided_p(k: int, n: int, p: float) -> float:
    """The exact two-sided p-value of k successes in n Bernoulli(p) trials."""
    return float(stats.binomtest(k, n, p).pvalue)


def variance_ratio_interval(kind: str, n: int, alpha: float = FALSE_ALARM) -> tuple[float, float]:
    """Two-sided interval for s^2/sigma^2 (unbiased sample variance over the true variance) that
    a correct sample of size n leaves with probability alpha.

    normal: (n-1) s^2/sigma^2 ~ chi^2(n-1), exactly.
    uniform: Var(s^2) = (mu4 - (n-3)/(n-1) sigma^4)/n with mu4/sigma^4 = 9/5 for U(-a, a)
    (mu4 = a^4/5, sigma^2 = a^2/3), and s^2 normal by the CLT (skewness O(n^-1/2): at n = 2e4
    the tail probability is alpha to within tens of percent).
    """
    if kind == "normal":
        dof = n - 1
        return (stats.chi2.ppf(alpha / 2, dof) / dof, stats.chi2.isf(alpha / 2, dof) / dof)
    if kind != "uniform":
        raise ValueError(f"kind={kind!r}: use 'normal' or 'uniform'")
    sd = _uniform_variance_sd(n)
    z = normal_quantile(alpha)
    return 1.0 - z * sd, 1.0 + z * sd


def _uniform_variance_sd(n: int) -> float:
    return math.sqrt((9.0 / 5.0 - (n - 3) / (n - 1)) / n)


def variance_miss_probability(
    kind: str, n: int, factor: float, alpha: float = FALSE_ALARM
) -> float:
    """P(the variance interval accepts) when the true variance is ``factor`` x the expected one:
    one minus the test's power (computed directly, so tiny values do not round to 0)."""
    lo, hi = variance_ratio_interval(kind, n, alpha)
    if kind == "normal":
        dof = n - 1
        law = stats.chi2(dof, scale=factor / dof)  # s^2/sigma0^2 = factor chi^2(n-1)/(n-1)
    else:
        law = stats.norm(factor, factor * _uniform_variance_sd(n))
    # P(lo <= X <= hi), from the tail that keeps digits when the law sits outside [lo, hi].
    if law.median() < lo:
        return float(max(law.sf(lo) - law.sf(hi), 0.0))
    return float(max(law.cdf(hi) - law.cdf(lo), 0.0))


def uniform_max_shortfall(n: int, alpha: float = FALSE_ALARM) -> float:
    """t with P(max of n |U(-a, a)| samples < a (1 - t)) = alpha: |w|/a ~ U(0, 1), so the
    probability is (1 - t)^n and t = 1 - alpha^(1/n) (6.9e-4 at n = 20,000)."""
    return -math.expm1(math.log(alpha) / n)


@lru_cache(maxsize=256)
def ks_critical(n: int, alpha: float = FALSE_ALARM) -> float:
    """D with P(D_n > D) = alpha for the exact two-sided one-sample KS statistic."""
    return float(stats.kstwo.isf(alpha, n))


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


def ratio_in(value: float, center: float, lo: float, hi: float) -> float:
    """How far ``value`` is from ``center`` in units of the interval's half on its side: the
    error/allowed ratio of an asymmetric band (<= 1 inside)."""
    if value >= center:
        return (value - center) / (hi - center) if hi > center else math.inf
    return (center - value) / (center - lo) if center > lo else math.inf


__all__ = [
    "FALSE_ALARM",
    "binomial_interval",
    "binomial_two_sided_p",
    "ks_critical",
    "moment_bands",
    "normal_quantile",
    "ratio_in",
    "sample_moments",
    "student_t_quantile",
    "uniform_max_shortfall",
    "variance_miss_probability",
    "variance_ratio_interval",
]

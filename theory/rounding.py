"""Floating-point error model: the source of every tolerance in varguard.

A check never picks a tolerance by hand. It asks this module for the bound on the error of the
quantity it compares, given the working precision ``u`` (unit roundoff), the reduction length ``n``
and the condition number ``kappa`` of the data. Each bound names the theorem it comes from.

Reductions use the probabilistic bound of Higham & Mary (2019): with independent, mean-zero
rounding errors, a sum of n terms has relative error at most

    gamma~(n, lam) = exp(lam * sqrt(n) * u + n * u^2 / (1 - u)) - 1  ~=  lam * sqrt(n) * u

with probability at least 1 - 2 exp(-lam^2 (1-u)^2 / 2). The deterministic worst case,
gamma_n = n u / (1 - n u) (Higham 2002, Lemma 3.1), is attained only by adversarial data and
would make every check blind at n = 1e5 in float32 (gamma_n > 6e-3). We take lam = LAMBDA = 8:
the bound fails with probability below 2.6e-14 per reduction, i.e. a false-alarm rate far below
1e-6 for a whole run of many thousands of reductions.

Variance algorithms (Chan, Golub & LeVeque 1983), with kappa = sqrt(1 + mean^2 / var):
one-pass E[x^2] - E[x]^2 has relative error ~ n kappa^2 u; Welford ~ n kappa u; two-pass
~ n u + n^2 kappa^2 u^2. Replacing n by the probabilistic sqrt(n) as above keeps the order in
kappa, which is what separates a correct algorithm from the one-pass mutant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sympy as sp

from theory.oracle import Oracle, derived_in

#: lam in Higham & Mary's bound; per-reduction failure probability 2 exp(-lam^2/2) < 2.6e-14.
LAMBDA = 8.0

#: Unit roundoff u = 2^-p (round to nearest, p = significand bits incl. the implicit one).
UNIT_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "bfloat16": 2.0**-8,
    "float16": 2.0**-11,
}

#: Largest binary exponent of each storage format (bfloat16 keeps float32's exponent range).
MAX_EXPONENT = {"float64": 1023, "float32": 127, "bfloat16": 127, "float16": 15}

#: Accumulation precision a sound implementation uses for a given storage dtype: every framework
#: accumulates half-precision sums in float32, so a float16 accumulator is a bug, not a choice.
ACCUMULATE_IN = {
    "float64": "float64",
    "float32": "float32",
    "bfloat16": "float32",
    "float16": "float32",
}

SOURCE_HM = (
    "Higham & Mary 2019, A New Approach to Probabilistic Rounding Error Analysis, "
    "SIAM J. Sci. Comput. 41(5), Thm 2.4"
)
SOURCE_CGL = (
    "Chan, Golub & LeVeque 1983, Algorithms for Computing the Sample Variance, Am. Stat. 37(3)"
)


def unit_roundoff(dtype: str) -> float:
    key = str(dtype).removeprefix("torch.")
    if key not in UNIT_ROUNDOFF:
        raise ValueError(f"dtype={dtype!r} has no error model; use one of {sorted(UNIT_ROUNDOFF)}")
    return UNIT_ROUNDOFF[key]


def overflow_threshold(dtype: str) -> float:
    """The smallest magnitude that rounds to infinity in ``dtype`` (round to nearest, IEEE 754):
    halfway between the largest finite value (2 - 2u) 2^emax and 2^(emax + 1), i.e.
    (2 - u) 2^emax: 65520 for float16. A computed value within its error bound of this may
    round to the largest finite value or to infinity, whichever side the exact value is on."""
    key = str(dtype).removeprefix("torch.")
    return (2.0 - unit_roundoff(key)) * 2.0 ** MAX_EXPONENT[key]


def accumulation_roundoff(dtype: str) -> float:
    return unit_roundoff(ACCUMULATE_IN[str(dtype).removeprefix("torch.")])


def gamma(n: int | float, u: float) -> float:
    """Deterministic gamma_n = n u / (1 - n u) (Higham 2002, Lemma 3.1)."""
    if n * u >= 1:
        return math.inf
    return n * u / (1 - n * u)


def gamma_prob(n: int | float, u: float, lam: float = LAMBDA) -> float:
    """Higham & Mary's probabilistic gamma~_n(lam), never above the deterministic gamma_n."""
    prob = math.expm1(lam * math.sqrt(n) * u + n * u * u / (1 - u))
    return min(prob, gamma(n, u))


def false_alarm_probability(lam: float = LAMBDA, u: float = 0.0) -> float:
    """P(bound fails) per reduction: 2 exp(-lam^2 (1-u)^2 / 2)."""
    return 2.0 * math.exp(-(lam**2) * (1 - u) ** 2 / 2)


def kappa(mean: np.ndarray | float, var: np.ndarray | float) -> np.ndarray | float:
    """Condition number of the variance, sqrt(1 + mean^2/var) (Chan, Golub & LeVeque 1983)."""
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(1.0 + np.where(var > 0, mean**2 / np.where(var > 0, var, 1.0), np.inf))


@dataclass(frozen=True)
class Precision:
    """The precisions one computation runs at: storage (inputs/outputs) and accumulation."""

    storage: str
    accumulate: str

    @classmethod
    def of(cls, dtype: str, *, accumulate: str | None = None) -> Precision:
        dtype = str(dtype).removeprefix("torch.")
        return cls(dtype, accumulate or ACCUMULATE_IN[dtype])

    @property
    def u(self) -> float:
        return unit_roundoff(self.storage)

    @property
    def u_acc(self) -> float:
        return unit_roundoff(self.accumulate)

    @property
    def u_elem(self) -> float:
        """Roundoff of elementwise steps. Reductions accumulate in ``accumulate``, but a
        half-precision kernel may keep elementwise intermediates in its storage type (PyTorch's
        CPU batch-norm backward does on non-contiguous bfloat16/float16 input), so each such
        step costs up to the storage roundoff."""
        return max(self.u, self.u_acc)


# Number of roundings between the statistics and an output element in any sensible kernel
# (subtract, multiply by invstd, multiply by gamma, add beta, rsqrt, fused forms of these).
ELEMENTWISE_OPS = 6


#: Below this many distinct rounding levels spanned by a channel's spread, its values repeat
#: (a constant channel is the extreme) and the rounding errors of its sum are correlated, not
#: independent: Higham & Mary's model does not apply and the deterministic gamma_m does.
DISTINCT_LEVELS = 1024.0


def rounding_is_random(m: int, mean, std, prec: Precision) -> np.ndarray:
    """Whether the rounding errors of an m-term sum of values mean +- std look independent.

    A recursive sum's partial sums grow to ~m |mean|, whose unit in the last place is ~m u |mean|;
    once the spread std is below that, the low bits each addition rounds away no longer vary
    and the errors add up systematically. So the probabilistic model needs
    std >= max(DISTINCT_LEVELS, m) * u * |mean| (measured: a channels-last float32 channel with
    std/|mean| = 3.2e-4 and m = 50960 summed with error 1.15e-4 |mean|, past lambda sqrt(m) u).
    """
    mean = np.abs(np.asarray(mean, dtype=np.float64))
    return np.asarray(std) >= max(DISTINCT_LEVELS, m) * prec.u_acc * mean


def bulk_spread(x: np.ndarray, *, channel_axis: int = 1) -> np.ndarray:
    """Per-channel spread of the bulk of the values, as rounding sees it: 1.4826 x the median
    absolute deviation (equal to the std for normal data, unmoved by a few outliers; 0 for a
    constant channel), and 0 for a channel of fewer distinct values than DISTINCT_LEVELS and
    than half its length: its values repeat (an expanded view's do, along the repeated axis),
    so the roundings of its sum repeat too (measured: a float64 channel alternating two values,
    6590 long, summed with an error of 1090 u |mean|, 2.5 times the probabilistic bound). A few
    coincident values do not make a sum's roundings systematic (1014 distinct of 1024 float32
    values near 1e3: the probabilistic model holds)."""
    rows = np.moveaxis(np.asarray(x, dtype=np.float64), channel_axis, 0).reshape(
        x.shape[channel_axis], -1
    )
    med = np.median(rows, axis=1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(rows - med), axis=1)
    if rows.shape[1] == 0:
        return mad
    ordered = np.sort(rows, axis=1)
    distinct = 1 + (np.diff(ordered, axis=1) != 0).sum(axis=1)
    repeating = distinct < min(rows.shape[1] / 2, DISTINCT_LEVELS)
    return np.where(repeating, 0.0, mad)


def bn_statistics_error(
    m: int, mean: np.ndarray, var: np.ndarray, prec: Precision, *, spread=None
) -> tuple:
    """Absolute error bounds (d_mean, d_var) of batch statistics over m values per channel.

    d_mean <= gamma_m' |mean| + gamma~_m std: the m-term sum of x = mean + (x - mean). Its
    fluctuating part rounds randomly (gamma~_m); so does the constant part while
    :func:`rounding_is_random`, else its errors are systematic and the deterministic gamma_m
    applies (measured: a constant float64 channel of 1365 values sums with an error of ~630 u).
    ``spread`` (here and in the tolerances below): the spread of the bulk of the values
    (:func:`bulk_spread`); rare outliers inflate std without making the bulk's low bits vary,
    so the smaller of the two decides.
    d_var covers Welford (gamma~_m kappa var) and two-pass (d_mean^2 + (gamma~_m + 2u) var), the
    two algorithms that are correct; one-pass exceeds it by a factor ~kappa (see module doc).
    """
    g = gamma_prob(m, prec.u_acc)
    mean = np.asarray(mean, dtype=np.float64)
    std = np.sqrt(np.asarray(var, dtype=np.float64))
    bulk = std if spread is None else np.minimum(std, np.asarray(spread, dtype=np.float64))
    g_mean = np.where(rounding_is_random(m, mean, bulk, prec), g, gamma(m, prec.u_acc))
    d_mean = g_mean * np.abs(mean) + g * std
    d_var = g * std * np.sqrt(mean**2 + std**2) + d_mean**2 + (g + 2 * prec.u_acc) * std**2
    return d_mean, d_var


def _channel(a, ndim: int, channel_axis: int = 1) -> np.ndarray:
    shape = [1] * ndim
    shape[channel_axis] = -1
    return np.reshape(np.asarray(a, dtype=np.float64), shape)


def bn_normalize_error(
    x_hat: np.ndarray, *, mean, var, eps: float, d_mean, d_var, prec: Precision
) -> np.ndarray:
    """Per-element bound on |x_hat_computed - x_hat| given errors d_mean, d_var of the statistics.

    First-order perturbation of x_hat = (x - mean) / s, s = sqrt(var + eps):
      |d x_hat| <= d_mean / s + |x_hat| d_var / (2 s^2) + c u_acc kappa_e (1 + |x_hat|),
    kappa_e = sqrt(1 + mean^2 / s^2). The last term is the elementwise roundings (c of them, at
    ``prec.u_elem``) of a kernel that folds the statistics into x * scale + shift: u |x| / s.
    """
    nd = x_hat.ndim
    s2 = _channel(var, nd) + eps
    ax = np.abs(x_hat)
    return (
        _channel(d_mean, nd) / np.sqrt(s2)
        + ax * _channel(d_var, nd) / (2 * s2)
        + normalize_rounding(x_hat, mean=mean, var=var, eps=eps, prec=prec)
    )


def normalize_rounding(x_hat: np.ndarray, *, mean, var, eps: float, prec: Precision) -> np.ndarray:
    """The elementwise part of :func:`bn_normalize_error`: c roundings at ``prec.u_elem`` of
    x * scale + shift, c u kappa_e (1 + |x_hat|). Unlike the statistics' part, shared by a whole
    channel (or row), it differs from element to element."""
    nd = x_hat.ndim
    kap = np.sqrt(1.0 + _channel(mean, nd) ** 2 / (_channel(var, nd) + eps))
    return ELEMENTWISE_OPS * prec.u_elem * kap * (1 + np.abs(x_hat))


def bn_forward_tolerance(
    x_hat: np.ndarray,
    y: np.ndarray,
    *,
    m: int | None,
    mean,
    var,
    eps: float,
    gamma_,
    beta,
    prec: Precision,
    spread=None,
    stat_errors: tuple | None = None,
) -> np.ndarray:
    """Per-element bound on |y_computed - y| for y = gamma x_hat + beta.

    Training mode (``m`` = values per channel): the batch statistics carry the errors of
    :func:`bn_statistics_error`. Eval mode (``m=None``): the running statistics are given
    exactly, or within ``stat_errors`` = (d_mean, d_var) when the module computed them itself
    (:func:`running_update_error`). Adds c u_acc |beta| for the affine step and u |y| for
    rounding to the storage dtype.
    """
    if m is None:
        zero = np.zeros_like(np.asarray(var, dtype=np.float64))
        d_mean, d_var = stat_errors if stat_errors is not None else (zero, zero)
    else:
        d_mean, d_var = bn_statistics_error(
            m, np.asarray(mean), np.asarray(var), prec, spread=spread
        )
    e_x = bn_normalize_error(
        x_hat, mean=mean, var=var, eps=eps, d_mean=d_mean, d_var=d_var, prec=prec
    )
    nd = x_hat.ndim
    c = ELEMENTWISE_OPS * prec.u_elem
    return (
        np.abs(_channel(gamma_, nd)) * e_x
        + c * np.abs(_channel(beta, nd))
        + prec.u * np.abs(y)
        + _tiny(prec)
    )


def _channel_sum_gamma(terms: np.ndarray, prec: Precision) -> np.ndarray:
    """Per channel (axis 1), the relative error bound of the sum of ``terms`` over every other
    axis: :func:`_column_gamma`, the deterministic gamma_m where the terms repeat (measured: an
    expanded float32 incoming gradient, 4 values repeated 5000 times, summed into dbeta with an
    error of 1.24 times the probabilistic bound)."""
    return _column_gamma(np.moveaxis(terms, 1, -1).reshape(-1, terms.shape[1]), prec)


def _channel_parameter_tolerance(dy, x_hat, e_x, prec: Precision, *, e_elem) -> np.ndarray:
    """Bound on dgamma = sum dy x_hat per channel (axis 1) over every other axis: the row
    norms' dweight bound (:func:`_parameter_gradient_tolerance`) with the channel's values as
    its column."""

    def columns(a) -> np.ndarray:
        return np.moveaxis(np.broadcast_to(a, np.shape(x_hat)), 1, -1).reshape(-1, x_hat.shape[1])

    tol_dgamma, _ = _parameter_gradient_tolerance(
        columns(dy), columns(x_hat), columns(e_x), prec, e_elem=columns(e_elem)
    )
    return tol_dgamma


def bn_backward_tolerance(
    x_hat: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    *,
    m: int,
    mean,
    var,
    eps: float,
    gamma_,
    prec: Precision,
    spread=None,
) -> tuple:
    """Bounds on (dx, dgamma, dbeta) of training-mode batch norm, element/channel-wise.

    dbeta = sum dy and dgamma = sum dy x_hat are m-term reductions (gamma~_m times the sum of
    magnitudes, gamma_m where the terms repeat: :func:`_channel_sum_gamma`) plus the propagated
    error of x_hat; dx = gamma/(m s) [m dy - sum dy - x_hat
    sum(dy x_hat)] adds the errors of its two sums, of x_hat and of s, and c roundings of each
    of its three terms' magnitudes.
    """
    nd = x_hat.ndim
    axes = tuple(i for i in range(nd) if i != 1)
    d_mean, d_var = bn_statistics_error(m, np.asarray(mean), np.asarray(var), prec, spread=spread)
    e_x = bn_normalize_error(
        x_hat, mean=mean, var=var, eps=eps, d_mean=d_mean, d_var=d_var, prec=prec
    )
    g_b = _channel_sum_gamma(dy, prec)
    c = ELEMENTWISE_OPS * prec.u_elem
    ady = np.abs(dy)
    s_dy = ady.sum(axis=axes)
    s_dye = (ady * e_x).sum(axis=axes)
    sum_dyx = (dy * x_hat).sum(axis=axes)
    tol_dbeta = g_b * s_dy + prec.u * np.abs(dy.sum(axis=axes)) + _tiny(prec)
    e_elem = normalize_rounding(x_hat, mean=mean, var=var, eps=eps, prec=prec)
    tol_dgamma = _channel_parameter_tolerance(dy, x_hat, e_x, prec, e_elem=e_elem)
    s2 = _channel(var, nd) + eps
    scale = np.abs(_channel(gamma_, nd)) / (m * np.sqrt(s2))
    ax = np.abs(x_hat)
    terms = (
        c * (m * ady + _channel(np.abs(dy.sum(axis=axes)), nd) + ax * _channel(np.abs(sum_dyx), nd))
        + _channel(g_b * s_dy, nd)
        + ax * _channel(tol_dgamma, nd)
        + e_x * _channel(np.abs(sum_dyx), nd)
        # second order: x_hat's own error times that of sum(dy x_hat); it matters where
        # x_hat = 0 exactly (constant channels) and the first-order terms vanish.
        + e_x * _channel(s_dye, nd)
    )
    tol_dx = (
        scale * terms
        + np.abs(dx) * (_channel(d_var, nd) / (2 * s2) + c)
        + prec.u * np.abs(dx)
        + _tiny(prec)
    )
    return tol_dx, tol_dgamma, tol_dbeta


def bn_eval_backward_tolerance(
    x_hat: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    *,
    m: int,
    mean,
    var,
    eps: float,
    gamma_,
    prec: Precision,
    stat_errors: tuple | None = None,
) -> tuple:
    """Bounds on (dx, dgamma, dbeta) of eval-mode batch norm (the running statistics are
    constants: a frozen batch norm trained through when fine-tuning).

    dx = gamma dy / s, s = sqrt(running_var + eps): a few elementwise roundings (c u |dx|), the
    output's rounding (u |dx|), and, when the running variance carries an error d_var
    (``stat_errors``), |gamma dy| d_var / (2 s^3). dbeta = sum dy and dgamma = sum dy x_hat are
    m-term reductions (gamma~_m times the sum of magnitudes), the latter with x_hat's own error
    (:func:`bn_normalize_error` with the statistics' errors).
    """
    nd = x_hat.ndim
    axes = tuple(i for i in range(nd) if i != 1)
    zero = np.zeros_like(np.asarray(var, dtype=np.float64))
    d_mean, d_var = stat_errors if stat_errors is not None else (zero, zero)
    e_x = bn_normalize_error(
        x_hat, mean=mean, var=var, eps=eps, d_mean=d_mean, d_var=d_var, prec=prec
    )
    g_b = _channel_sum_gamma(dy, prec)
    c = ELEMENTWISE_OPS * prec.u_elem
    s2 = _channel(var, nd) + eps
    ady = np.abs(dy)
    tol_dx = (
        (c + prec.u) * np.abs(dx)
        + np.abs(_channel(gamma_, nd)) * ady * _channel(d_var, nd) / (2 * s2 * np.sqrt(s2))
        + _tiny(prec)
    )
    tol_dbeta = g_b * ady.sum(axis=axes) + prec.u * np.abs(dy.sum(axis=axes)) + _tiny(prec)
    e_elem = normalize_rounding(x_hat, mean=mean, var=var, eps=eps, prec=prec)
    tol_dgamma = _channel_parameter_tolerance(dy, x_hat, e_x, prec, e_elem=e_elem)
    return tol_dx, tol_dgamma, tol_dbeta


def running_update_error(
    prev_error, old, batch, d_batch, factor: float, prec: Precision
) -> np.ndarray:
    """Error of running = (1 - f) old + f batch, given the error of old and of batch.

    Three roundings of the two products and their sum (3 u_acc on each term), the rounding of
    the result to its float32 buffer (u |new|), and the rounding of the factor itself: a kernel
    that rounds f to its accumulation type first computes 1 - f_hat with f_hat = f (1 + d),
    |d| <= u_acc, an absolute error u_acc f on both weights. Where f is near 1 that is far more
    than 3 u_acc (1 - f) |old| (measured: momentum 0.9912 on a constant channel, torch's CPU
    kernel, 1.3e-8 against 2.1e-9 without this term).
    """
    new = (1 - factor) * np.asarray(old) + factor * np.asarray(batch)
    return (
        (1 - factor) * prev_error
        + factor * d_batch
        + 3 * prec.u_acc * ((1 - factor) * np.abs(old) + factor * np.abs(batch))
        + prec.u_acc * factor * (np.abs(old) + np.abs(batch))
        + unit_roundoff("float32") * np.abs(new)
    )


def bn_moments_tolerance(x_hat: np.ndarray, tol: np.ndarray, mean_t: np.ndarray, axes) -> tuple:
    """Bounds on the per-channel mean and variance of a computed normalised output y_t.

    With y_t = x_hat + e, |e| <= tol (:func:`bn_forward_tolerance`):
    |mean(y_t)| <= mean(tol) and
    |var(y_t) - var(x_hat)| <= 2 mean(|x_hat| tol) + mean(tol)^2 + 2 |mean(y_t)| mean(tol).
    ``mean_t`` is the measured mean(y_t); ``axes`` the reduced axes. Returns (mean_tol, var_tol).
    """
    mean_tol = tol.mean(axis=axes) + 1e-15
    var_tol = (
        2 * (np.abs(x_hat) * tol).mean(axis=axes)
        + mean_tol**2
        + 2 * np.abs(mean_t) * mean_tol
        + 1e-15
    )
    return mean_tol, var_tol


def chan_combine_error(counts, means, d_means, d_m2s, full_mean) -> tuple[np.ndarray, np.ndarray]:
    """First-order error bounds (mean, M2) of shard statistics combined by Chan's formula.

    mean = sum n_k mean_k / n: its error is the count-weighted shard errors. M2 = sum M2_k +
    sum n_k (mean_k - mean)^2 (Chan, Golub & LeVeque 1983): the shard M2 errors add, and the
    between-shard term moves by 2 n_k |mean_k - mean| (d mean_k + d mean). ``counts`` are the
    shard sizes, ``means`` the shard means as computed, ``d_means``/``d_m2s`` their bounds
    (:func:`bn_statistics_error`), ``full_mean`` the exact mean of the whole batch.
    """
    n_k = np.array(counts, dtype=np.float64)[:, None]
    total = n_k.sum()
    e_mean = (n_k * np.array(d_means)).sum(axis=0) / total
    spread = np.abs(np.array(means) - full_mean)
    e_m2 = np.array(d_m2s).sum(axis=0) + 2 * (n_k * spread * (np.array(d_means) + e_mean)).sum(
        axis=0
    )
    return e_mean, e_m2


# --- elementwise functions: SELU, AlphaDropout, a sampler's bound -------------------------------

#: Error of selu(x) at x = 2^k (lambda rounded, one product: 2u) and x <= -60 (alpha and lambda
#: rounded and multiplied: 3u; expm1 = -1 exactly): a few ulps, 4u.
SELU_CONSTANTS_ULPS = 4.0
#: Error of selu(x) in units of u|y|: lambda, alpha rounded to the dtype and multiplied (3u),
#: expm1 accurate to 1 ulp (<= 2u relative: SLEEF's u10 kernels, glibc), the final product (1u);
#: rounding the argument (x * input_scale, 1u) moves y by lambda alpha e^x u|x| <= u|y| because
#: |x| e^x <= |expm1(x)| for x < 0. 7u in all, taken as 8u. A kernel computing exp(x) - 1 has
#: relative error up to ~u/|x| near 0, past 8u for |x| below ~1/8.
SELU_FORWARD_ULPS = 8.0
#: AlphaDropout (ATen's _dropout_impl): a = 1/sqrt((alpha'^2 p + 1)(1 - p)) in float64 (6
#: roundings), b's two constants rounded to the dtype and combined (4), a rounded (1), then
#: x * a + b (2): at most 13 roundings on any path, relative to |a x| + |b|; taken as 16.
ALPHA_DROPOUT_ULPS = 16.0


def subnormal_spacing(dtype: str) -> float:
    """Spacing of the subnormals of ``dtype``: the absolute error floor of one rounding."""
    fi = np.finfo(np.float16) if dtype == "float16" else None
    if fi is not None:
        return float(fi.smallest_subnormal)
    if dtype == "bfloat16":
        return 2.0**-133
    return float(np.finfo(np.dtype(dtype)).smallest_subnormal)


def selu_constants_tolerance(expected: np.ndarray, dtype: str) -> np.ndarray:
    """|selu(x) - exact| at x = 2^k and x <= -60: SELU_CONSTANTS_ULPS u |y|."""
    return SELU_CONSTANTS_ULPS * unit_roundoff(dtype) * np.abs(expected)


def selu_forward_tolerance(y: np.ndarray, dtype: str) -> np.ndarray:
    """SELU_FORWARD_ULPS (u + u64)|y| + SELU_FORWARD_ULPS eta: the target's error and the
    float64 reference's own (the same model at u64), so float64 targets are not charged with the
    reference's; eta the dtype's subnormal spacing."""
    u, u64 = unit_roundoff(dtype), unit_roundoff("float64")
    return SELU_FORWARD_ULPS * (u + u64) * np.abs(y) + SELU_FORWARD_ULPS * subnormal_spacing(dtype)


def alpha_dropout_tolerance(magnitude: np.ndarray, dtype: str) -> np.ndarray:
    """ALPHA_DROPOUT_ULPS (u + u64)(|a x| + |b|) for AlphaDropout's affine map; ``magnitude`` is
    |a x| + |b| per value (the target's and the reference's roundings)."""
    return ALPHA_DROPOUT_ULPS * (unit_roundoff(dtype) + unit_roundoff("float64")) * magnitude


def uniform_bound_slack(a: float, dtype: str) -> float:
    """How far past the exact bound a of U(-a, a) a sampler's values may lie.

    torch computes a in float64 in at most 8 roundings (Kaiming: the gain sqrt(2/(1 + a^2)) 4,
    gain/sqrt(fan) 2, times sqrt(3) 2; Xavier: 5), then draws from + (to - from) * x with x in
    [0, 1); rounding is monotone, so every |w| <= fl(a) <= a (1 + u)(1 + u64)^8 exactly, no
    statistics involved. One more (1 + u64) for the rounding of theory's a to float64:
    slack = a ((1 + u)(1 + u64)^9 - 1).
    """
    u, u64 = unit_roundoff(dtype), unit_roundoff("float64")
    return a * math.expm1(math.log1p(u) + 9 * math.log1p(u64))


def _tiny(prec: Precision) -> float:
    # Absolute floor: the smallest normal of the storage type (subnormal flushing is allowed).
    return float(np.finfo(np.float16).tiny) if prec.storage == "float16" else 1e-30


def reduction_tolerance(abs_sum: np.ndarray, n: int, prec: Precision) -> np.ndarray:
    """|computed sum - exact sum| <= gamma~_n * sum |terms| (+ output rounding)."""
    return gamma_prob(n, prec.u_acc) * np.asarray(abs_sum) + _tiny(prec)


# --- row normalisations: layer norm, RMSNorm, group norm, the fused residual add ---------------
#
# Rows are the leading dimensions of the input, the statistics are taken over the trailing
# ``normalized_shape`` (n values). Arrays are flattened to (rows, n) inside; per-row statistics
# (mean, var, ms) may have the leading shape or be flat. ``prec`` describes the activations:
# storage = the dtype of x and y, accumulate = the type the reductions run in. The parameters
# (weight, bias) may be stored in another dtype (float32 parameters with bfloat16 activations, or
# the reverse): they enter only as the values they hold, which the float64 reference uses
# exactly, and through the rounding of the products weight * xhat and dy * weight, which is one
# of the ELEMENTWISE_OPS roundings at ``prec.u_elem``. The output is stored in the activations'
# dtype (torch returns y in x's dtype for mixed parameters), so its final rounding is prec.u.


def _row_length(normalized_shape) -> tuple[tuple[int, ...], int]:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(
            f"normalized_shape={normalized_shape!r}: must be an int or a non-empty tuple of "
            "positive ints (the trailing dimensions the statistics are taken over)"
        )
    return shape, math.prod(shape)


def _rows(a, n: int) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1, n)


def _per_row(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1, 1)


def _row_param(v, shape: tuple[int, ...], n: int, default: float) -> np.ndarray:
    """A parameter broadcast against the input (weight of ``normalized_shape``, or any shape that
    broadcasts, e.g. group norm's per-channel weight), as (rows, n); None is ``default``."""
    if v is None:
        return np.full((1, n), default)
    return np.broadcast_to(np.asarray(v, dtype=np.float64), shape).reshape(-1, n)


def row_statistics_error(
    n: int, mean: np.ndarray, var: np.ndarray, prec: Precision, *, spread=None
) -> tuple:
    """Absolute error bounds (d_mean, d_var) of a row's mean and biased variance over n values.

    A layer-norm row is a batch-norm channel read along another axis: the same n-term reductions
    of the same kind of values. So this is :func:`bn_statistics_error` with m = n: Higham & Mary's
    gamma~_n (Thm 2.4) for the sums, or the deterministic gamma_n (Higham 2002, Lemma 3.1) where
    the row's values repeat (:func:`rounding_is_random`), and Chan, Golub & LeVeque's condition
    number kappa for the variance: Welford and two-pass are inside the bound, one-pass
    E[x^2] - E[x]^2 exceeds it by a factor ~kappa. ``mean``, ``var`` and ``spread`` are per row
    (any shape); ``spread`` is :func:`bulk_spread` of the rows, i.e.
    ``bulk_spread(x.reshape(-1, n), channel_axis=0)``.
    """
    return bn_statistics_error(n, mean, var, prec, spread=spread)


def _layer_norm_rows(x_hat, *, n, mean, var, eps, prec, spread) -> dict:
    """The pieces of the layer-norm bounds on (rows, n) arrays: x_hat, its error e_x, var + eps
    and d_var, all per row."""
    xh = _rows(x_hat, n)
    mean_r, var_r = _per_row(mean).ravel(), _per_row(var).ravel()
    if mean_r.shape != (xh.shape[0],) or var_r.shape != mean_r.shape:
        raise ValueError(
            f"mean has {mean_r.size} and var {var_r.size} values for {xh.shape[0]} rows of "
            f"n={n}: pass one statistic per row (the leading shape of x)"
        )
    sp_r = None if spread is None else _per_row(spread).ravel()
    d_mean, d_var = row_statistics_error(n, mean_r, var_r, prec, spread=sp_r)
    # A row is batch norm's channel: transposed, the rows lie on bn_normalize_error's axis 1.
    e_x = bn_normalize_error(
        xh.T, mean=mean_r, var=var_r, eps=eps, d_mean=d_mean, d_var=d_var, prec=prec
    ).T
    e_elem = normalize_rounding(xh.T, mean=mean_r, var=var_r, eps=eps, prec=prec).T
    return {
        "xh": xh,
        "e_x": e_x,
        "e_elem": e_elem,
        "s2": var_r[:, None] + eps,
        "d_var": d_var[:, None],
    }


def layer_norm_forward_tolerance(
    x_hat: np.ndarray,
    y: np.ndarray,
    *,
    normalized_shape,
    mean,
    var,
    eps: float,
    weight=None,
    bias=None,
    prec: Precision,
    spread=None,
) -> np.ndarray:
    """Per-element bound on |y_computed - y| for layer norm, y = weight xhat + bias per row.

    The statistics carry :func:`row_statistics_error` (Higham & Mary 2019, Thm 2.4; Chan, Golub &
    LeVeque 1983), propagated to xhat by the first-order perturbation of
    :func:`bn_normalize_error`; then |weight| times that, c u_elem |bias| for the affine step and
    u |y| for the output's rounding (Higham 2002, eq. 2.4, the standard model). ``weight`` and
    ``bias`` broadcast against ``x_hat`` (shape ``normalized_shape``, or pre-broadcast).
    """
    _, n = _row_length(normalized_shape)
    rows = _layer_norm_rows(x_hat, n=n, mean=mean, var=var, eps=eps, prec=prec, spread=spread)
    shape = np.shape(x_hat)
    w = _row_param(weight, shape, n, 1.0)
    b = _row_param(bias, shape, n, 0.0)
    c = ELEMENTWISE_OPS * prec.u_elem
    tol = np.abs(w) * rows["e_x"] + c * np.abs(b) + prec.u * np.abs(_rows(y, n)) + _tiny(prec)
    return tol.reshape(shape)


def _columns_random(terms: np.ndarray, prec: Precision) -> np.ndarray:
    """Per column of ``terms`` (count, n): whether the roundings of its values look independent
    (:func:`rounding_is_random`), not repeated (an expanded view's rows repeat)."""
    count = max(terms.shape[0], 1)
    if not terms.shape[0]:
        return np.ones(terms.shape[1], dtype=bool)
    spread = bulk_spread(terms, channel_axis=1)
    return rounding_is_random(count, terms.mean(axis=0), spread, prec)


def _column_gamma(terms: np.ndarray, prec: Precision) -> np.ndarray:
    """The relative error bound of each column sum of ``terms`` (count, n): Higham & Mary's
    gamma~_count where the rounding errors look independent, the deterministic gamma_count where
    the terms repeat (:func:`rounding_is_random`, as for the statistics: measured, 4095 equal
    rows of an expanded gradient summed in float32 with an error of 1.23 gamma~ |sum|)."""
    count = max(terms.shape[0], 1)
    random = _columns_random(terms, prec)
    return np.where(random, gamma_prob(count, prec.u_acc), gamma(count, prec.u_acc))


def _summed_errors(per_term: np.ndarray, random: np.ndarray) -> np.ndarray:
    """Bound on a column sum of errors, each within ``per_term`` (count, n): where they are
    independent with mean zero (``random``), LAMBDA sqrt(sum per_term^2) (Hoeffding's inequality:
    exceeded with probability below 2 exp(-LAMBDA^2 / 2), the rate of :func:`gamma_prob`), never
    above the worst case sum per_term that holds where they repeat."""
    worst = per_term.sum(axis=0)
    prob = LAMBDA * np.sqrt((per_term * per_term).sum(axis=0))
    return np.where(random, np.minimum(prob, worst), worst)


def _parameter_gradient_tolerance(dy, x_hat, e_x, prec: Precision, *, e_elem) -> tuple:
    """Bounds on (sum dy xhat, sum dy) over axis 0 (the rows for layer norm and RMSNorm, samples
    and positions for group norm): count-term reductions, gamma~_count times the sum of the
    magnitudes (Higham & Mary 2019, Thm 2.4), or gamma_count where the terms repeat (an
    expanded incoming gradient: :func:`_column_gamma`); the propagated error of xhat, and c
    roundings of each product; u for the stored result.

    xhat's error ``e_x`` has a part shared by its row (the statistics' errors: summed as they
    stand, they may all lean one way) and an elementwise part ``e_elem`` (its own roundings);
    those and the products' roundings differ from term to term, so where the values do not
    repeat they add like independent errors (:func:`_summed_errors`), sqrt(count) rather than
    count times one term's. A worst-case sum of them let a weight gradient summed in bfloat16
    pass (the mutant rms_dweight_half_accumulation: errors ~ the sum itself once the running
    total stagnates), since c u_bfloat16 (2.3%) of every term's magnitude hides any systematic
    error below it."""
    c = ELEMENTWISE_OPS * prec.u_elem
    ady = np.abs(dy)
    terms = dy * x_hat
    g_w = _column_gamma(terms, prec)
    g_b = _column_gamma(dy, prec)
    elementwise = _summed_errors(c * np.abs(terms), _columns_random(terms, prec))
    elementwise = elementwise + _summed_errors(ady * e_elem, _columns_random(x_hat, prec))
    tol_dweight = (
        g_w * np.abs(terms).sum(axis=0)
        + elementwise
        + (ady * np.maximum(e_x - e_elem, 0.0)).sum(axis=0)
        + prec.u * np.abs(terms.sum(axis=0))
        + _tiny(prec)
    )
    tol_dbias = g_b * ady.sum(axis=0) + prec.u * np.abs(dy.sum(axis=0)) + _tiny(prec)
    return tol_dweight, tol_dbias


def _layer_norm_dx_tolerance(rows: dict, g, dx, *, n: int, prec: Precision, product: bool):
    """Bound on dx = 1/(n s) [n g - sum g - xhat sum(g xhat)] per row, g = dy * weight: batch
    norm's dx bound (:func:`bn_backward_tolerance`) with dy read as g, plus, when g is a rounded
    product (``product``), that rounding carried through dx, which is linear in g."""
    xh, e_x, s2, d_var = rows["xh"], rows["e_x"], rows["s2"], rows["d_var"]
    gn = gamma_prob(n, prec.u_acc)
    c = ELEMENTWISE_OPS * prec.u_elem
    ag, ax = np.abs(g), np.abs(xh)
    s_g = ag.sum(axis=1, keepdims=True)
    s_gx = (ag * ax).sum(axis=1, keepdims=True)
    s_ge = (ag * e_x).sum(axis=1, keepdims=True)
    sum_g = np.abs(g.sum(axis=1, keepdims=True))
    sum_gx = np.abs((g * xh).sum(axis=1, keepdims=True))
    tol_sum_gx = (gn + c) * s_gx + s_ge + prec.u * sum_gx
    terms = (
        c * (n * ag + sum_g + ax * sum_gx)
        + gn * s_g
        + ax * tol_sum_gx
        + e_x * sum_gx
        + e_x * s_ge  # second order; it decides where xhat = 0 exactly (constant rows)
    )
    if product:
        terms = terms + prec.u_elem * (n * ag + s_g + ax * s_gx)
    adx = np.abs(dx)
    return terms / (n * np.sqrt(s2)) + adx * (d_var / (2 * s2) + c) + prec.u * adx + _tiny(prec)


def layer_norm_backward_tolerance(
    x_hat: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    *,
    normalized_shape,
    mean,
    var,
    eps: float,
    weight=None,
    prec: Precision,
    spread=None,
) -> tuple:
    """Bounds on (dx, dweight, dbias) of layer norm: dx element-wise, dweight and dbias of shape
    ``normalized_shape``.

    dx: per row, the n-term sums sum g and sum g xhat (Higham & Mary 2019, Thm 2.4) with g =
    dy * weight, the error of xhat and of s = sqrt(var + eps) from :func:`row_statistics_error`,
    and c roundings of each of dx's three terms (the derivation of :func:`bn_backward_tolerance`,
    which is this formula with a per-channel weight). dweight = sum dy xhat and dbias = sum dy
    reduce over the ROWS: their reduction length is the number of rows, not n.
    """
    nshape, n = _row_length(normalized_shape)
    rows = _layer_norm_rows(x_hat, n=n, mean=mean, var=var, eps=eps, prec=prec, spread=spread)
    shape = np.shape(x_hat)
    dy2 = _rows(dy, n)
    g = dy2 * _row_param(weight, shape, n, 1.0)
    tol_dx = _layer_norm_dx_tolerance(
        rows, g, _rows(dx, n), n=n, prec=prec, product=weight is not None
    )
    tol_dw, tol_db = _parameter_gradient_tolerance(
        dy2, rows["xh"], rows["e_x"], prec, e_elem=rows["e_elem"]
    )
    return tol_dx.reshape(shape), tol_dw.reshape(nshape), tol_db.reshape(nshape)


def rms_statistics_error(n: int, ms, prec: Precision, *, spread=None) -> np.ndarray:
    """Absolute error bound on a row's mean square ms = sum(x^2)/n: (gamma + 2 u_acc) ms.

    No centring, so no cancellation: the sum is of non-negative terms, whose sum of magnitudes
    is the sum itself, and the error bound gamma_n sum|t_i| of a recursive sum (Higham 2002,
    Lemma 3.1 and eq. 4.4) is a relative error gamma_n of the result, with no condition number
    kappa; where the rounding errors are independent (:func:`rounding_is_random` of the squares)
    Higham & Mary's gamma~_n ~ lambda sqrt(n) u replaces it (2019, Thm 2.4). 2 u_acc: the
    rounding of each square and of the division by n. ``spread``: the spread of the squares
    (:func:`bulk_spread` of x^2 per row); None, nothing is known about them: deterministic
    gamma_n. Layer norm's variance, by contrast, has relative error ~ gamma~_n kappa
    (:func:`row_statistics_error`).
    """
    ms = np.asarray(ms, dtype=np.float64)
    if spread is None:
        g = gamma(n, prec.u_acc)
    else:
        g = np.where(
            rounding_is_random(n, ms, spread, prec), gamma_prob(n, prec.u_acc), gamma(n, prec.u_acc)
        )
    return (g + 2 * prec.u_acc) * ms


def _rms_rows(x_hat, *, n, ms, eps, prec) -> dict:
    """The pieces of the RMSNorm bounds on (rows, n) arrays. The squares' spread relative to
    their mean is scale free, so it is read off xhat = x / r itself."""
    xh = _rows(x_hat, n)
    ms_r = _per_row(ms)
    if ms_r.shape[0] != xh.shape[0]:
        raise ValueError(
            f"ms has {ms_r.size} values for {xh.shape[0]} rows of n={n}: pass one mean square "
            "per row (the leading shape of x)"
        )
    sq = xh * xh
    mean_sq = sq.mean(axis=1, keepdims=True)
    spread_sq = bulk_spread(sq, channel_axis=0)[:, None]
    rel = rms_statistics_error(n, mean_sq, prec, spread=spread_sq) / np.where(
        mean_sq > 0, mean_sq, 1.0
    )
    r2 = ms_r + eps
    # the relative error of r = sqrt(ms + eps) is half that of ms (scaled by ms/(ms+eps)),
    # plus the elementwise roundings (add eps, sqrt, divide, multiply)
    c = ELEMENTWISE_OPS * prec.u_elem
    rel_r = rel * ms_r / (2 * r2)
    e_elem = c * np.abs(xh)
    e_x = np.abs(xh) * rel_r + e_elem
    return {"xh": xh, "e_x": e_x, "e_elem": e_elem, "r2": r2, "rel_r": rel_r}


def rms_norm_forward_tolerance(
    x_hat: np.ndarray,
    y: np.ndarray,
    *,
    normalized_shape,
    ms,
    eps: float,
    weight=None,
    prec: Precision,
) -> np.ndarray:
    """Per-element bound on |y_computed - y| for RMSNorm, y = weight x / sqrt(ms + eps).

    Every step is relative: xhat's error is |xhat| (d_ms / (2 (ms + eps)) + c u_elem) with d_ms
    from :func:`rms_statistics_error` (Higham 2002, Lemma 3.1 / Higham & Mary 2019, Thm 2.4, no
    kappa), times |weight|, plus u |y| for the output's rounding (the standard model).
    """
    _, n = _row_length(normalized_shape)
    rows = _rms_rows(x_hat, n=n, ms=ms, eps=eps, prec=prec)
    shape = np.shape(x_hat)
    w = _row_param(weight, shape, n, 1.0)
    tol = np.abs(w) * rows["e_x"] + prec.u * np.abs(_rows(y, n)) + _tiny(prec)
    return tol.reshape(shape)


def rms_norm_backward_tolerance(
    x_hat: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    *,
    normalized_shape,
    ms,
    eps: float,
    weight=None,
    prec: Precision,
) -> tuple:
    """Bounds on (dx, dweight) of RMSNorm: dx element-wise, dweight of shape ``normalized_shape``.

    dx = (1/r) [g - xhat mean(g xhat)], g = dy * weight: the n-term sum of g xhat (Higham & Mary
    2019, Thm 2.4) with xhat's relative error (:func:`rms_norm_forward_tolerance`), c roundings
    of each term, r's relative error on all of dx, and the rounding of g when it is a product.
    dweight = sum over the ROWS of dy xhat (reduction length = number of rows).
    """
    nshape, n = _row_length(normalized_shape)
    rows = _rms_rows(x_hat, n=n, ms=ms, eps=eps, prec=prec)
    shape = np.shape(x_hat)
    xh, e_x = rows["xh"], rows["e_x"]
    dy2 = _rows(dy, n)
    g = dy2 * _row_param(weight, shape, n, 1.0)
    gn = gamma_prob(n, prec.u_acc)
    c = ELEMENTWISE_OPS * prec.u_elem
    ag, ax = np.abs(g), np.abs(xh)
    s_gx = (ag * ax).sum(axis=1, keepdims=True) / n
    s_ge = (ag * e_x).sum(axis=1, keepdims=True) / n
    mean_gx = np.abs((g * xh).sum(axis=1, keepdims=True)) / n
    tol_mean = (gn + c) * s_gx + s_ge
    terms = c * (ag + ax * mean_gx) + ax * tol_mean + e_x * mean_gx + e_x * s_ge
    if weight is not None:
        terms = terms + prec.u_elem * (ag + ax * s_gx)
    adx = np.abs(_rows(dx, n))
    tol_dx = terms / np.sqrt(rows["r2"]) + adx * (rows["rel_r"] + c) + prec.u * adx + _tiny(prec)
    tol_dw, _ = _parameter_gradient_tolerance(dy2, xh, e_x, prec, e_elem=rows["e_elem"])
    return tol_dx.reshape(shape), tol_dw.reshape(nshape)


def _group_rows(x_hat, num_groups: int) -> tuple[int, int]:
    x_hat = np.asarray(x_hat)
    if x_hat.ndim < 2 or num_groups < 1 or x_hat.shape[1] % num_groups:
        raise ValueError(
            f"x_hat of shape {x_hat.shape} with num_groups={num_groups!r}: need (N, C, *spatial) "
            "with C divisible by num_groups"
        )
    c = x_hat.shape[1]
    return c, c // num_groups * math.prod(x_hat.shape[2:])


def group_norm_forward_tolerance(
    x_hat: np.ndarray,
    y: np.ndarray,
    *,
    num_groups: int,
    mean,
    var,
    eps: float,
    weight=None,
    bias=None,
    prec: Precision,
    spread=None,
) -> np.ndarray:
    """Per-element bound on |y_computed - y| for group norm: :func:`layer_norm_forward_tolerance`
    with rows = the (N, G) groups of n = (C/G) prod(spatial) values and the per-channel affine
    broadcast over each channel's positions (Wu & He 2018): Higham & Mary 2019, Thm 2.4 and
    Chan, Golub & LeVeque 1983 for the group statistics, the standard model (Higham 2002, eq. 2.4)
    for the elementwise steps. ``mean``, ``var``, ``spread``: per group, shape (N, G)."""
    c, n = _group_rows(x_hat, num_groups)
    nd = np.ndim(x_hat)
    return layer_norm_forward_tolerance(
        x_hat,
        y,
        normalized_shape=(n,),
        mean=mean,
        var=var,
        eps=eps,
        weight=None if weight is None else _channel(weight, nd),
        bias=None if bias is None else _channel(bias, nd),
        prec=prec,
        spread=spread,
    )


def group_norm_backward_tolerance(
    x_hat: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    *,
    num_groups: int,
    mean,
    var,
    eps: float,
    weight=None,
    prec: Precision,
    spread=None,
) -> tuple:
    """Bounds on (dx, dweight, dbias) of group norm: dx is layer norm's row bound on each group
    (:func:`layer_norm_backward_tolerance`, n = (C/G) prod(spatial), g = dy * weight[c]);
    dweight and dbias, shape (C,), reduce over the N prod(spatial) values of each channel
    (Higham & Mary 2019, Thm 2.4, with that reduction length)."""
    c, n = _group_rows(x_hat, num_groups)
    shape = np.shape(x_hat)
    rows = _layer_norm_rows(x_hat, n=n, mean=mean, var=var, eps=eps, prec=prec, spread=spread)
    dy2 = _rows(dy, n)
    w = None if weight is None else _channel(weight, len(shape))
    g = dy2 * _row_param(w, shape, n, 1.0)
    tol_dx = _layer_norm_dx_tolerance(
        rows, g, _rows(dx, n), n=n, prec=prec, product=weight is not None
    )

    def by_channel(a) -> np.ndarray:  # (C, N * prod(spatial)), transposed so axis 0 is summed
        return np.moveaxis(np.reshape(a, shape), 1, 0).reshape(c, -1).T

    tol_dw, tol_db = _parameter_gradient_tolerance(
        by_channel(dy2),
        by_channel(rows["xh"]),
        by_channel(rows["e_x"]),
        prec,
        e_elem=by_channel(rows["e_elem"]),
    )
    return tol_dx.reshape(shape), tol_dw, tol_db


def residual_add_tolerance(total, prec: Precision) -> np.ndarray:
    """Bound on |residual_out - total| for the stream a fused add + norm kernel stores, where
    ``total`` = x + residual exactly (float64) and residual_out is in the storage dtype.

    One rounding to storage: u |total| (the standard model, Higham 2002, eq. 2.4). A kernel that
    forms the sum in its accumulation type and then rounds to storage rounds twice:
    u (1 + u_acc) |total| + u_acc |total|; the second rounding is exact when the accumulation
    type holds the sum (float32 for two bfloat16/float16 values of comparable size). Compare with
    the exact sum, not with the reference's rounded stream: two correct roundings may differ by a
    storage ulp, up to 2u |total|. The normalised output is then bounded by the norm's own forward
    tolerance at the ROUNDED stream, which is what the kernel normalises and what
    reference.prenorm normalises.
    """
    u_acc = prec.u_acc if prec.accumulate != prec.storage else 0.0
    rel = prec.u * (1 + u_acc) + u_acc
    return rel * np.abs(np.asarray(total, dtype=np.float64)) + _tiny(prec)


def residual_add_backward_tolerance(dresidual_out, dnorm, tol_dnorm, prec: Precision) -> np.ndarray:
    """Bound on the fused tail's dx = dresidual = dresidual_out + dnorm (theory.prenorm), given
    the bound ``tol_dnorm`` on the norm's dx: the computed dnorm is within tol_dnorm, and the sum
    is rounded at most twice (accumulation type, then storage; the standard model, Higham 2002,
    eq. 2.4). ``dresidual_out=None``: nothing reads the stream downstream, dx = dnorm."""
    dnorm = np.asarray(dnorm, dtype=np.float64)
    d = dnorm if dresidual_out is None else np.asarray(dresidual_out, dtype=np.float64) + dnorm
    rel = prec.u * (1 + prec.u_acc) + prec.u_acc
    return (1 + rel) * np.asarray(tol_dnorm, dtype=np.float64) + rel * np.abs(d) + _tiny(prec)


def one_pass_variance_error(n: int, mean, var, prec: Precision, *, spread=None) -> np.ndarray:
    """How far a variance computed in one pass, E[x^2] - E[x]^2, over n values may be off: the
    algorithm Chan, Golub & LeVeque warn against. Not a tolerance (no correct kernel computes
    it): the size of a known defect, to tell the cases it fails apart from the others.

    The n-term sum of squares carries gamma~_n of its value n (var + mean^2) (Higham & Mary
    2019, Thm 2.4), the squares and the division by n one rounding each (2 u_acc), and the
    subtraction one more (u_acc): (gamma~_n + 3 u_acc)(var + mean^2); mean^2 moves by
    2 |mean| d_mean with d_mean of :func:`bn_statistics_error`. Relative to var that grows like
    kappa^2 (gamma~_n + 3 u_acc), where the two-pass and Welford error (:func:`bn_statistics_error`)
    grows like kappa gamma~_n: one-pass exceeds the bound once kappa is past a few.
    """
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    d_mean, _ = bn_statistics_error(n, mean, var, prec, spread=spread)
    g = gamma_prob(n, prec.u_acc)
    return (g + 3 * prec.u_acc) * (var + mean**2) + 2 * np.abs(mean) * d_mean


def rms_moments_tolerance(x_hat: np.ndarray, tol: np.ndarray, axes) -> np.ndarray:
    """Bound on |mean(y_t^2) - mean(x_hat^2)| of a computed RMS-normalised output y_t over
    ``axes``, given |y_t - x_hat| <= tol element-wise (:func:`rms_norm_forward_tolerance`).

    With y_t = x_hat + e: y_t^2 - x_hat^2 = 2 x_hat e + e^2, so the mean square moves by at
    most mean(2 |x_hat| tol + tol^2). The companion of :func:`bn_moments_tolerance` (mean and
    variance, for the centred norms) for RMSNorm's oracle ms/(ms + eps).
    """
    ax = np.abs(np.asarray(x_hat, dtype=np.float64))
    t = np.asarray(tol, dtype=np.float64)
    return (2 * ax * t + t * t).mean(axis=axes) + 1e-15


def stored_tolerance(tol, exact, *, dtype: str, prec: Precision) -> np.ndarray:
    """Bound on a result whose bound ``tol`` was derived for storage in ``prec.storage`` (its
    last term, u |result|, is that rounding) when the result is stored in ``dtype`` instead: a
    parameter gradient comes back in the parameter's dtype, which may be coarser than the
    activations' (bfloat16 weights with float32 activations).

    The standard model (Higham 2002, eq. 2.4): the stored value is fl(v) = v (1 + delta),
    |delta| <= u_d, so |fl(v) - exact| <= |v - exact| + u_d |v| <= tol + u_d (|exact| + tol).
    A dtype as fine as the storage's or finer adds nothing relative: ``tol`` already has a
    rounding at least as coarse. Below the dtype's smallest normal the rounding is absolute:
    the floor of the model, its smallest normal (subnormals may be flushed), as for every bound
    here; that one is added always, since a dtype finer near 1 may be coarser near 0 (float16's
    subnormals, 6e-8 apart, under bfloat16's, measured: a float16 dbias of 3.6e-6 beside
    bfloat16 activations, 1.2 of the bound without it)."""
    tol = np.asarray(tol, dtype=np.float64)
    u_d = unit_roundoff(dtype)
    floor = _tiny(Precision.of(dtype))
    if u_d <= prec.u:
        return tol + floor
    return tol + u_d * (np.abs(np.asarray(exact, dtype=np.float64)) + tol) + floor


# --- oracles: the model itself, printed by `varguard theory` ------------------------------------

n, u, lam, k = sp.symbols("n u lambda kappa", positive=True)


_oracle = derived_in("rounding")


def oracles() -> list[Oracle]:
    f32 = {"u": "2**-24"}
    out = [
        _oracle(
            f"u_{name}",
            f"unit roundoff of {name}",
            sp.Integer(2) ** -bits,
            {},
            "IEEE 754-2008; bfloat16: Google Brain float",
        )
        for name, bits in (("float64", 53), ("float32", 24), ("bfloat16", 8), ("float16", 11))
    ]
    return out + [
        _oracle(
            "gamma_n",
            "deterministic bound on the relative error of an n-term sum",
            n * u / (1 - n * u),
            {"n": 100000, **f32},
            "Higham 2002, Accuracy and Stability of Numerical Algorithms, Lemma 3.1",
        ),
        _oracle(
            "gamma_prob",
            f"probabilistic bound on an n-term sum (lambda={LAMBDA:g})",
            sp.exp(lam * sp.sqrt(n) * u + n * u**2 / (1 - u)) - 1,
            {"n": 100000, "lambda": LAMBDA, **f32},
            SOURCE_HM,
        ),
        _oracle(
            "false_alarm",
            "probability the probabilistic bound fails per reduction",
            2 * sp.exp(-(lam**2) / 2),
            {"lambda": LAMBDA},
            SOURCE_HM,
        ),
        _oracle(
            "variance_one_pass",
            "relative error order of one-pass E[x^2]-E[x]^2",
            n * k**2 * u,
            {"n": 1000, "kappa": 1e4, **f32},
            SOURCE_CGL,
        ),
        _oracle(
            "variance_welford",
            "relative error order of Welford's algorithm",
            n * k * u,
            {"n": 1000, "kappa": 1e4, **f32},
            SOURCE_CGL,
        ),
        _oracle(
            "variance_two_pass",
            "relative error order of the two-pass algorithm",
            n * u + n**2 * k**2 * u**2,
            {"n": 1000, "kappa": 1e4, **f32},
            SOURCE_CGL,
        ),
        _oracle(
            "row_variance_relative_error",
            "layer norm: relative error order of a row's variance (Welford or two-pass, random "
            "rounding), the leading terms of row_statistics_error: it grows with kappa",
            lam * sp.sqrt(n) * u * k + lam**2 * n * u**2 * k**2,
            {"n": 4096, "kappa": 1000, "lambda": LAMBDA, **f32},
            f"{SOURCE_HM}; {SOURCE_CGL}",
            "lambda*sqrt(n)*u*kappa + (lambda*sqrt(n)*u*kappa)**2",
        ),
        _oracle(
            "rms_relative_error",
            "RMSNorm: relative error order of a row's mean square, a sum of non-negative terms: "
            "no kappa (rms_statistics_error)",
            lam * sp.sqrt(n) * u,
            {"n": 4096, "lambda": LAMBDA, **f32},
            f"{SOURCE_HM}; Higham 2002, Lemma 3.1 and eq. 4.4 (terms of one sign)",
            "lambda*sqrt(n)*u",
        ),
    ]

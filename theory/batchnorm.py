"""Batch normalisation: forward moments, the backward pass proved from autodiff, running statistics.

Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift" (Algorithm 1 and section 3). Per channel, over a batch of m values:

    xhat_i = (x_i - mu_B) / sqrt(var_B + eps),   y_i = gamma xhat_i + beta,   var_B biased (/ m).

Proof device used throughout: after differentiating, replace eps by S^2 - var_B(x) with S > 0 a new
symbol (a bijection eps <-> S for S^2 > var_B). Then sqrt(var_B + eps) = S exactly and every
identity becomes a rational one in x, dy, gamma and S, which SymPy decides with together() and
expand().
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import scipy.stats
import sympy as sp
from sympy import stats

from theory.oracle import Oracle, derived_in

IOFFE = "Ioffe & Szegedy 2015, Batch Normalization"
TORCH_BN = "torch.nn.BatchNorm2d documentation (momentum, running_var uses the unbiased variance)"

gamma, beta = sp.symbols("gamma beta", real=True)
eps = sp.Symbol("eps", positive=True)
_S = sp.Symbol("S", positive=True)  # S = sqrt(var_B + eps), the proof device above


def _check_m(m: Any, *, name: str = "m", least: int = 2) -> None:
    if isinstance(m, bool) or not isinstance(m, int) or m < least:
        raise ValueError(f"{name}={m!r}: must be an int >= {least}; pass e.g. {name}={least + 2}")


def _batch_symbols(m: int) -> tuple[tuple[sp.Symbol, ...], tuple[sp.Symbol, ...]]:
    return sp.symbols(f"x0:{m}", real=True), sp.symbols(f"dy0:{m}", real=True)


def _moments(x: Sequence[sp.Expr]) -> tuple[sp.Expr, sp.Expr]:
    m = len(x)
    mean = sum(x) / m
    return mean, sum((xi - mean) ** 2 for xi in x) / m  # biased: / m, as in training mode


def _is_zero(expr: sp.Expr, var: sp.Expr) -> bool:
    """Decide expr == 0 for all x and eps > 0, through the substitution eps = S^2 - var_B."""
    return sp.expand(sp.together(sp.sympify(expr).subs(eps, _S**2 - var))) == 0


# -- forward ---------------------------------------------------------------------------------------


def forward_symbolic(m: int) -> tuple[tuple[sp.Symbol, ...], list[sp.Expr]]:
    """(x, xhat) for m symbolic inputs."""
    _check_m(m)
    x, _ = _batch_symbols(m)
    mean, var = _moments(x)
    return x, [(xi - mean) / sp.sqrt(var + eps) for xi in x]


def forward_moments_match(m: int) -> bool:
    """Prove mean(xhat) = 0 and mean(xhat^2) = var_B/(var_B + eps) for m symbolic inputs."""
    x, xhat = forward_symbolic(m)
    _, var = _moments(x)
    mean_ok = _is_zero(sum(xhat) / m, var)
    var_ok = _is_zero(sum(h**2 for h in xhat) / m - var / (var + eps), var)
    return mean_ok and var_ok


# -- backward --------------------------------------------------------------------------------------


def backward_symbolic(m: int) -> dict[str, Any]:
    """dL/dx, dL/dgamma, dL/dbeta by SymPy differentiation of L = sum_i dy_i y_i (m inputs).

    L's gradient is the vector-Jacobian product the backward pass computes for upstream dy.
    """
    _check_m(m)
    x, dy = _batch_symbols(m)
    _, xhat = forward_symbolic(m)
    loss = sum(d * (gamma * h + beta) for d, h in zip(dy, xhat, strict=True))
    return {
        "x": x,
        "dy": dy,
        "dx": [sp.diff(loss, xi) for xi in x],
        "dgamma": sp.diff(loss, gamma),
        "dbeta": sp.diff(loss, beta),
    }


def _sqrt(v: Any) -> Any:
    return sp.sqrt(v) if isinstance(v, sp.Basic) else v**0.5


def backward_closed_form(
    x: Sequence[Any], dy: Sequence[Any], *, gamma: Any = 1, eps: Any = 1e-5
) -> tuple[list[Any], Any, Any]:
    """(dx, dgamma, dbeta) of one channel: dx = gamma/(m sqrt(var+eps)) [m dy - sum dy - xhat
    sum(dy xhat)], dgamma = sum dy xhat, dbeta = sum dy. Works on numbers, mpmath or SymPy."""
    if len(x) != len(dy) or len(x) < 2:
        raise ValueError(
            f"len(x)={len(x)}, len(dy)={len(dy)}: need equal lengths >= 2 (one channel's batch)"
        )
    m = len(x)
    mean, var = _moments(x)
    inv_std = 1 / _sqrt(var + eps)
    xhat = [(xi - mean) * inv_std for xi in x]
    sum_dy = sum(dy)
    sum_dy_xhat = sum(d * h for d, h in zip(dy, xhat, strict=True))
    dx = [
        gamma * inv_std / m * (m * d - sum_dy - h * sum_dy_xhat)
        for d, h in zip(dy, xhat, strict=True)
    ]
    return dx, sum_dy_xhat, sum_dy


def backward_matches_closed_form(
    m: int, *, closed_form: Callable[..., tuple[list[Any], Any, Any]] = backward_closed_form
) -> bool:
    """Prove, for m fully symbolic inputs, that autodiff's gradients equal ``closed_form``'s.

    ``closed_form`` is a parameter so a test can hand in a wrong formula and see the proof fail.
    """
    sym = backward_symbolic(m)
    dx, dgamma, dbeta = closed_form(sym["x"], sym["dy"], gamma=gamma, eps=eps)
    _, var = _moments(sym["x"])
    pairs = [*zip(sym["dx"], dx, strict=True), (sym["dgamma"], dgamma), (sym["dbeta"], dbeta)]
    return all(_is_zero(auto - closed, var) for auto, closed in pairs)


# -- running statistics ----------------------------------------------------------------------------

mu, sigma2 = sp.Symbol("mu", real=True), sp.Symbol("sigma2", positive=True)
m_s = sp.Symbol("m", positive=True, integer=True)
momentum, running, batch = sp.symbols("momentum running batch", real=True)
n_s = sp.Symbol("n", positive=True, integer=True)


def expected_biased_variance(m: int) -> sp.Expr:
    """E[var_B] for m iid N(mu, sigma2) values, by sympy.stats: (m-1)/m sigma2."""
    _check_m(m)
    xs = [stats.Normal(f"x{i}", mu, sp.sqrt(sigma2)) for i in range(m)]
    _, var = _moments(xs)
    return sp.simplify(stats.E(sp.expand(var)))


@lru_cache(maxsize=1)
def expected_biased_variance_expr() -> sp.Expr:
    """E[var_B] for symbolic m: var_B = mean(x^2) - xbar^2 and m^2 E[xbar^2] = sum_ij E[x_i x_j]
    with E[x_i^2] = sigma2 + mu^2 (m diagonal terms), E[x_i x_j] = mu^2 (m(m-1) others)."""
    e_sq = sigma2 + mu**2
    e_xbar_sq = (m_s * e_sq + m_s * (m_s - 1) * mu**2) / m_s**2
    return sp.factor(sp.simplify(e_sq - e_xbar_sq))


def unbiased_factor_expr() -> sp.Expr:
    """The c with c E[var_B] = sigma2: m/(m-1) (Bessel's correction, torch's running_var)."""
    c = sp.Symbol("c")
    (sol,) = sp.solve(sp.Eq(c * expected_biased_variance_expr(), sigma2), c)
    return sol


def running_update_expr() -> sp.Expr:
    return (1 - momentum) * running + momentum * batch


def cumulative_update_expr() -> sp.Expr:
    """momentum=None in torch: momentum 1/n at the n-th batch, a cumulative average."""
    return sp.simplify(running_update_expr().subs(momentum, 1 / n_s))


def cumulative_average_is_mean(k: int) -> bool:
    """Prove that k cumulative updates from any start leave the mean of the k batches."""
    _check_m(k, name="k", least=1)
    batches = sp.symbols(f"b0:{k}", real=True)
    r = sp.Symbol("r0", real=True)  # the first update has n = 1, so the start drops out
    for n, b in enumerate(batches, start=1):
        r = cumulative_update_expr().subs({running: r, batch: b, n_s: n})
    return sp.simplify(r - sum(batches) / k) == 0


def keras_momentum_expr() -> sp.Expr:
    """Keras keeps moving = moving * k + batch * (1 - k): torch's rule iff k = 1 - momentum."""
    k = sp.Symbol("k")
    keras = running * k + batch * (1 - k)
    (sol,) = sp.solve(sp.Eq(keras, running_update_expr()), k)
    return sol


def _check_momentum(value: Any) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"momentum={value!r}: must be in [0, 1] (torch's default is 0.1)")


def running_update(
    running: Any,
    batch: Any,
    *,
    momentum: float | None = 0.1,
    num_batches_tracked: int | None = None,
) -> Any:
    """torch's update: (1-momentum) running + momentum batch; momentum=None averages cumulatively
    and needs num_batches_tracked (counted after this batch, so >= 1)."""
    if momentum is None:
        if num_batches_tracked is None or num_batches_tracked < 1:
            raise ValueError(
                f"num_batches_tracked={num_batches_tracked!r}: momentum=None needs the count "
                "including this batch (>= 1)"
            )
        momentum = 1 / num_batches_tracked
    _check_momentum(momentum)
    return (1 - momentum) * running + momentum * batch


def keras_momentum(torch_momentum: float) -> float:
    _check_momentum(torch_momentum)
    return 1 - torch_momentum


# -- sample variance -------------------------------------------------------------------------------


def chi2_moments_expr() -> tuple[sp.Expr, sp.Expr]:
    """Mean and variance of chi^2(m-1), a sum of m-1 independent Z^2: (m-1) E[Z^2], (m-1) Var."""
    z = stats.Normal("z", 0, 1)
    return (m_s - 1) * stats.E(z**2), (m_s - 1) * sp.simplify(stats.variance(z**2))


def variance_confidence_interval(
    m: int, sigma2: float, alpha: float, *, biased: bool = False
) -> tuple[float, float]:
    """Equal-tailed 1-alpha interval for the sample variance of m iid N(., sigma2) values.

    (m-1) s^2 / sigma2 ~ chi^2(m-1) for the unbiased s^2; ``biased=True`` gives the interval for
    var_B = (m-1)/m s^2, BN's batch variance.
    """
    _check_m(m)
    if not sigma2 > 0:
        raise ValueError(f"sigma2={sigma2!r}: the true variance must be > 0")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r}: the false-alarm rate must be in (0, 1), e.g. 1e-6")
    dist = scipy.stats.chi2(m - 1)
    scale = sigma2 / (m if biased else m - 1)
    return float(dist.ppf(alpha / 2) * scale), float(dist.isf(alpha / 2) * scale)


# -- oracles ---------------------------------------------------------------------------------------


def _backward_example() -> dict[str, Any]:
    """The aggregates of one small batch, x = (1, 2, 4), dy = (1, -1, 3), at element i = 0."""
    x, dy = [1, 2, 4], [1, -1, 3]
    e = sp.Rational(1, 10**5)
    mean, var = _moments([sp.Integer(v) for v in x])
    xhat = [(v - mean) / sp.sqrt(var + e) for v in x]
    return {
        "m": 3,
        "gamma": 1,
        "var": var,
        "eps": e,
        "dy": dy[0],
        "xhat": xhat[0],
        "sum_dy": sum(dy),
        "sum_dy_xhat": sum(d * h for d, h in zip(dy, xhat, strict=True)),
    }


def oracles() -> list[Oracle]:
    var_b = sp.Symbol("var_B", positive=True)
    var, m_sym, dy, xhat, sum_dy, sum_dy_xhat = sp.symbols("var m dy xhat sum_dy sum_dy_xhat")
    dx_expr = gamma / (m_sym * sp.sqrt(var + eps)) * (m_sym * dy - sum_dy - xhat * sum_dy_xhat)
    chi_mean, chi_var = chi2_moments_expr()
    bn_params = {"var_B": 1, "eps": sp.Rational(1, 10**5)}

    o = derived_in("batchnorm")

    proof = "proved equal to SymPy autodiff for m = 2..6 by backward_matches_closed_form"
    return [
        o(
            "output_mean",
            "per-channel mean of xhat (proved for small m)",
            sp.Integer(0),
            {},
            f"{IOFFE}, Algorithm 1",
            "0",
        ),
        o(
            "output_variance",
            "per-channel biased variance of xhat (proved for small m)",
            var_b / (var_b + eps),
            bn_params,
            f"{IOFFE}, Algorithm 1",
            "var_B/(var_B+eps)",
        ),
        o(
            "backward_dx",
            f"dL/dx_i ({proof})",
            dx_expr,
            _backward_example(),
            f"{IOFFE}, section 3 (chain rule)",
            "gamma/(m*sqrt(var+eps))*(m*dy - sum_dy - xhat*sum_dy_xhat)",
        ),
        o(
            "backward_dgamma",
            f"dL/dgamma = sum dy xhat ({proof})",
            sum_dy_xhat,
            _backward_example(),
            f"{IOFFE}, section 3",
            "sum_dy_xhat",
        ),
        o(
            "backward_dbeta",
            f"dL/dbeta = sum dy ({proof})",
            sum_dy,
            _backward_example(),
            f"{IOFFE}, section 3",
            "sum_dy",
        ),
        o(
            "biased_variance_expectation",
            "E[var_B] = (m-1)/m sigma2 for iid inputs",
            expected_biased_variance_expr(),
            {"m": 8, "sigma2": 1, "mu": 0},
            "textbook",
        ),
        o(
            "unbiased_factor",
            "m/(m-1): running_var stores the unbiased batch variance",
            unbiased_factor_expr(),
            {"m": 8},
            f"{IOFFE}, Algorithm 2; {TORCH_BN}",
            "m/(m-1)",
        ),
        o(
            "running_update",
            "running = (1-momentum) running + momentum batch",
            running_update_expr(),
            {"momentum": sp.Rational(1, 10), "running": 0, "batch": 1},
            TORCH_BN,
            "(1-momentum)*running + momentum*batch",
        ),
        o(
            "cumulative_update",
            "momentum=None: running + (batch - running)/n at the n-th batch",
            cumulative_update_expr(),
            {"n": 2, "running": 0, "batch": 1},
            TORCH_BN,
        ),
        o(
            "keras_momentum",
            "Keras' momentum for the same update: 1 - torch momentum",
            keras_momentum_expr(),
            {"momentum": sp.Rational(1, 10)},
            "tf.keras.layers.BatchNormalization documentation",
            "1 - momentum",
        ),
        o(
            "chi2_mean",
            "E[(m-1) s^2/sigma2] = m-1 (chi^2 with m-1 degrees of freedom)",
            chi_mean,
            {"m": 8},
            "textbook (Cochran's theorem)",
            "m - 1",
        ),
        o(
            "chi2_variance",
            "Var[(m-1) s^2/sigma2] = 2(m-1)",
            chi_var,
            {"m": 8},
            "textbook (Cochran's theorem)",
            "2*(m - 1)",
        ),
    ]

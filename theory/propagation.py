"""Signal propagation through depth: vanishing sigmoid gradients, BN-ReLU gradient explosion and
the forward variance recursion behind Xavier, He and SELU initialisation.

Forward (He et al. 2015, section 2.2; Poole et al. 2016, "Exponential expressivity"): with
zero-mean iid weights, fan * Var[w] = c, the pre-activation variance obeys
q_l = c E[f(sqrt(q_{l-1}) z)^2], z ~ N(0, 1); for positively homogeneous f this is
q_l = c E[f(z)^2] q_{l-1}, a geometric sequence with ratio c E[f(z)^2].

BN-ReLU without skips (Yang, Pennington, Rao, Sohl-Dickstein, Schoenholz 2019, "A Mean Field
Theory of Batch Normalization", ICLR): the squared gradient norm grows by pi/(pi-1) per layer at
large width and batch. Their proof goes through the BN kernel's Gegenbauer expansion; we do NOT
reproduce it. We reproduce the constant with the standard mean-field heuristic (gradient
independence, batch B -> infinity), stated here so it can be judged:
  * backward through W^T multiplies the squared norm by sigma_w^2 (Var[w] = sigma_w^2 / N);
  * through phi' by E[phi'(z)^2], z ~ N(0, 1) (BN makes each pre-activation standard normal);
  * through BN by 1/Var_batch(h), where h = W phi(.) has batch variance sigma_w^2 Var[phi(z)]: the
    batch-mean of phi(z) is common to the whole batch and is removed by BN, so only Var counts
    (BN's projection off the mean and xhat directions removes 2 of B dimensions: negligible).
Hence lambda_G = E[phi'(z)^2] / Var[phi(z)], sigma_w cancels (as Yang et al. find: no
initialisation cures it), 1 for a linear network, and for ReLU (1/2) / (1/2 - 1/(2 pi)) =
pi/(pi-1) = 1.4669..., the value Yang et al. give for ReLU. (A one-off float64 simulation, width
and batch 1024, 20 BN-ReLU layers, measured 1.45-1.47 per layer; it is not part of the tests.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache, lru_cache

import mpmath
import sympy as sp

from theory import init, selu
from theory.oracle import Oracle, derived_in, evaluate

YANG = "Yang et al. 2019, A Mean Field Theory of Batch Normalization (ICLR), ReLU gradient rate"
HE = "He et al. 2015, Delving Deep into Rectifiers, section 2.2"

x = sp.Symbol("x", real=True)
z = init.z
a = init.a  # leaky_relu negative slope
_d = sp.Symbol("d", nonnegative=True, integer=True)
_prod_norms = sp.Symbol("prod_norms", nonnegative=True)


# -- vanishing gradients with sigmoid --------------------------------------------------------------


def sigmoid_derivative_max_expr() -> tuple[sp.Expr, sp.Expr]:
    """(argmax, max) of sigma'(x) = sigma(1-sigma): the unique root of sigma''(x) = 0 is x = 0."""
    sig = 1 / (1 + sp.exp(-x))
    d1 = sp.diff(sig, x)
    (x_star,) = sp.solve(sp.diff(d1, x), x)
    return x_star, sp.simplify(d1.subs(x, x_star))


def sigmoid_depth_bound_expr() -> sp.Expr:
    """||d out / d in|| <= prod_l (max sigma') ||W_l|| = (1/4)^d prod ||W_l|| (chain rule)."""
    return sigmoid_derivative_max_expr()[1] ** _d * _prod_norms


def sigmoid_gradient_bound(weight_norms: Sequence[float]) -> float:
    """(1/4)^d prod ||W_l|| for the d = len(weight_norms) layers' operator norms."""
    if len(weight_norms) == 0 or any(not n >= 0 for n in weight_norms):
        raise ValueError(
            f"weight_norms={list(weight_norms)!r}: need one norm >= 0 per layer (at least one)"
        )
    return float(
        evaluate(
            sigmoid_depth_bound_expr(),
            {"d": len(weight_norms), "prod_norms": math.prod(weight_norms)},
        )
    )


# -- BN-ReLU gradient explosion --------------------------------------------------------------------


@cache
def bn_gradient_growth_expr(activation: str) -> sp.Expr:
    """E[phi'(z)^2] / Var[phi(z)] (module docstring): relu, leaky_relu (slope a) or linear."""
    if activation not in ("relu", "leaky_relu", "linear"):
        raise ValueError(f"activation={activation!r}: use 'relu', 'leaky_relu' or 'linear'")
    s = init.negative_side_slope(activation)

    def gauss_mean(pos: sp.Expr, neg: sp.Expr) -> sp.Expr:  # phi = pos on z >= 0, neg below
        return init.half_line_gaussian_moment(pos, positive=True) + init.half_line_gaussian_moment(
            neg, positive=False
        )

    d_phi_sq = gauss_mean(sp.Integer(1), s**2)
    var_phi = gauss_mean(z**2, (s * z) ** 2) - gauss_mean(z, s * z) ** 2
    return sp.simplify(d_phi_sq / var_phi)


# -- forward variance recursion --------------------------------------------------------------------

_ACTIVATIONS = ("relu", "leaky_relu", "linear", "tanh", "selu")


@lru_cache(maxsize=1)
def _selu_second_moment():
    """E[selu(sqrt(q) z)^2] as a function of q, at alpha_01, lambda_01 (zero-mean weights)."""
    _, second = selu.moments_exprs()
    a01, l01 = selu.constants_exprs()
    q = sp.Symbol("q", positive=True)
    at = {selu.mu: 0, selu.omega: 0, selu.nu: q, selu.tau: 1, selu.alpha: a01, selu.lam: l01}
    return sp.lambdify(q, second.subs(at), "mpmath")


def second_moment(activation: str, q: float, *, negative_slope: float = 0.01) -> mpmath.mpf:
    """E[f(sqrt(q) z)^2], z ~ N(0, 1): closed forms for relu, leaky_relu, linear and selu,
    mpmath quadrature for tanh."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation={activation!r}: use one of {list(_ACTIVATIONS)}")
    if not q >= 0:
        raise ValueError(f"q={q!r}: a variance must be >= 0")
    if activation == "selu":
        return _selu_second_moment()(mpmath.mpf(q)) if q > 0 else mpmath.mpf(0)
    if activation == "tanh":
        root = mpmath.sqrt(q)
        return mpmath.quad(
            lambda t: mpmath.tanh(root * t) ** 2 * mpmath.npdf(t), [-mpmath.inf, 0, mpmath.inf]
        )
    # positively homogeneous: E[f(sqrt(q) z)^2] = q E[f(z)^2]
    m2 = init.second_moment(activation).subs(a, sp.Rational(str(negative_slope)))
    return mpmath.mpf(q) * evaluate(m2, {})


def variance_through_depth(
    depth: int,
    *,
    activation: str = "relu",
    weight_scale: float = 2.0,
    var0: float = 1.0,
    negative_slope: float = 0.01,
) -> list[float]:
    """[q_0, ..., q_depth] with q_l = weight_scale * E[f(sqrt(q_{l-1}) z)^2], q_0 = var0.

    weight_scale = fan_in * Var[w]: Xavier with fan_in = fan_out gives 1, He gives gain^2
    (2 for relu), LeCun normal for SELU 1. Ratios: He-relu 1, Xavier-relu 1/2, SELU at q = 1 stays.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth={depth!r}: must be an int >= 0 (number of layers)")
    if not weight_scale > 0:
        raise ValueError(f"weight_scale={weight_scale!r}: fan_in * Var[w] must be > 0")
    if not var0 > 0:
        raise ValueError(f"var0={var0!r}: the input variance must be > 0")
    qs = [float(var0)]
    with mpmath.workdps(20):  # plenty for a plot; quadrature at 50 digits would be slow
        for _ in range(depth):
            m2 = second_moment(activation, qs[-1], negative_slope=negative_slope)
            qs.append(float(weight_scale * m2))
    return qs


def variance_ratio_expr(activation: str, *, weight_scale: sp.Expr) -> sp.Expr:
    """q_l / q_{l-1} = weight_scale * E[f(z)^2] for positively homogeneous f (and SELU at q = 1)."""
    return weight_scale * init.second_moment(activation)


def oracles() -> list[Oracle]:
    x_star, d_max = sigmoid_derivative_max_expr()
    he_relu = variance_ratio_expr("relu", weight_scale=init.theory_gain("relu") ** 2)

    o = derived_in("propagation")

    return [
        o(
            "sigmoid_derivative_max",
            f"max sigma'(x) = sigma'({x_star}) from sigma''(x) = 0",
            d_max,
            {},
            "textbook (Hochreiter 1991; Glorot & Bengio 2010)",
            "1/4",
        ),
        o(
            "sigmoid_depth_bound",
            "gradient norm through d sigmoid layers <= (1/4)^d prod ||W||",
            sigmoid_depth_bound_expr(),
            {"d": 10, "prod_norms": 1},
            "textbook (chain rule)",
        ),
        o(
            "bn_relu_gradient_growth",
            "squared gradient norm growth per BN-ReLU layer, no skips: "
            "E[relu'^2]/Var[relu] (mean-field heuristic, see module docstring)",
            bn_gradient_growth_expr("relu"),
            {},
            YANG,
            "1.466942207",
        ),
        o(
            "bn_linear_gradient_growth",
            "same for a linear BN network: 1 (large-batch limit)",
            bn_gradient_growth_expr("linear"),
            {},
            YANG,
        ),
        o(
            "variance_ratio_he_relu",
            "q_l/q_{l-1} with He init and relu: gain^2 E[relu^2] = 1",
            he_relu,
            {},
            HE,
            "1",
        ),
        o(
            "variance_ratio_xavier_relu",
            "q_l/q_{l-1} with Xavier (fan_in = fan_out), relu: 1/2",
            variance_ratio_expr("relu", weight_scale=1),
            {},
            HE,
        ),
        o(
            "variance_ratio_lecun_selu",
            "q_l/q_{l-1} at q = 1, LeCun init, SELU: 1 (fixed point)",
            variance_ratio_expr("selu", weight_scale=1),
            {},
            "Klambauer et al. 2017, Self-Normalizing Neural Networks, section 3",
            "1",
        ),
    ]

"""Weight initialisation: fans, Xavier/Glorot and He/Kaiming bounds, and which gains are derived.

Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural networks":
Var[w] = 2/(fan_in + fan_out) (eq. 12, a compromise between fan_in Var = 1 forward and
fan_out Var = 1 backward), so the uniform bound solves Var[U(-a, a)] = a^2/3 = that (eq. 16).
He, Zhang, Ren, Sun 2015, "Delving Deep into Rectifiers": a layer keeps the second moment of its
pre-activations when fan * Var[w] * E[f(z)^2] = 1 for positively homogeneous f (E[f(sqrt(q) z)^2]
= q E[f(z)^2]), so gain^2 = fan * Var[w] = 1/E[f(z)^2], z ~ N(0, 1).
torch.nn.init.calculate_gain's tanh 5/3 and selu 3/4 are choices, not derivations: kept apart.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from functools import cache, lru_cache

import sympy as sp

from theory import selu
from theory.oracle import Oracle, derived_in, evaluate

GLOROT = "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward networks"
HE = "He et al. 2015, Delving Deep into Rectifiers"
TORCH_FANS = "torch.nn.init._calculate_fan_in_and_fan_out"
TORCH_GAIN = "torch.nn.init.calculate_gain"

z = sp.Symbol("z", real=True)
w, a_bound = sp.symbols("w a_bound", positive=True)
gain, fan, fan_in_s, fan_out_s = sp.symbols("gain fan fan_in fan_out", positive=True)
a = sp.Symbol("a", nonnegative=True)  # leaky_relu negative slope


# -- fans ------------------------------------------------------------------------------------------


def _check_shape(shape: Sequence) -> None:
    if len(shape) < 2:
        raise ValueError(
            f"shape={tuple(shape)!r}: fans need a weight with >= 2 dimensions "
            "(out_features, in_features, *kernel); pass the weight's full shape"
        )


def fan_in(shape: Sequence) -> int:
    """shape[1] * prod(shape[2:]): the inputs each output sums over (torch.nn.init)."""
    _check_shape(shape)
    return shape[1] * math.prod(shape[2:])


def fan_out(shape: Sequence) -> int:
    """shape[0] * prod(shape[2:]): the outputs each input feeds (torch.nn.init)."""
    _check_shape(shape)
    return shape[0] * math.prod(shape[2:])


# -- Xavier / Glorot ------------------------------------------------------------------------------


def uniform_variance() -> sp.Expr:
    """Var[U(-a, a)] = a^2/3 by integration of w^2 / (2a) over [-a, a]."""
    return sp.integrate(w**2 / (2 * a_bound), (w, -a_bound, a_bound))


def _uniform_bound_for(variance: sp.Expr) -> sp.Expr:
    """The a > 0 with Var[U(-a, a)] = variance."""
    (sol,) = sp.solve(sp.Eq(uniform_variance(), variance), a_bound)
    return sp.simplify(sol)


def xavier_variance_expr() -> sp.Expr:
    """Var[w] = 1/((fan_in + fan_out)/2): n Var[w] = 1 with n the mean of the two fans (eq. 12)."""
    return sp.together(1 / ((fan_in_s + fan_out_s) / 2))


@lru_cache(maxsize=1)
def xavier_uniform_bound_expr() -> sp.Expr:
    return _uniform_bound_for(gain**2 * xavier_variance_expr())


def xavier_normal_std_expr() -> sp.Expr:
    return sp.sqrt(gain**2 * xavier_variance_expr())


@lru_cache(maxsize=1)
def kaiming_uniform_bound_expr() -> sp.Expr:
    """a with a^2/3 = gain^2/fan: He's variance as a uniform bound, gain*sqrt(3/fan)."""
    return _uniform_bound_for(gain**2 / fan)


def kaiming_normal_std_expr() -> sp.Expr:
    return sp.sqrt(gain**2 / fan)


def _check_fans(**fans: int) -> None:
    for name, value in fans.items():
        if isinstance(value, bool) or not (isinstance(value, numbers.Integral) and value > 0):
            raise ValueError(
                f"{name}={value!r}: must be a positive int; compute it with fan_in/fan_out"
            )


def xavier_uniform_bound(fan_in: int, fan_out: int, *, gain: float = 1.0) -> float:
    _check_fans(fan_in=fan_in, fan_out=fan_out)
    return float(
        evaluate(xavier_uniform_bound_expr(), {"gain": gain, "fan_in": fan_in, "fan_out": fan_out})
    )


def xavier_normal_std(fan_in: int, fan_out: int, *, gain: float = 1.0) -> float:
    _check_fans(fan_in=fan_in, fan_out=fan_out)
    return float(
        evaluate(xavier_normal_std_expr(), {"gain": gain, "fan_in": fan_in, "fan_out": fan_out})
    )


def kaiming_uniform_bound(fan: int, *, gain: float = math.sqrt(2)) -> float:
    _check_fans(fan=fan)
    return float(evaluate(kaiming_uniform_bound_expr(), {"gain": gain, "fan": fan}))


def kaiming_normal_std(fan: int, *, gain: float = math.sqrt(2)) -> float:
    _check_fans(fan=fan)
    return float(evaluate(kaiming_normal_std_expr(), {"gain": gain, "fan": fan}))


# -- gains -----------------------------------------------------------------------------------------


def negative_side_slope(name: str, *, negative_slope: sp.Expr = a) -> sp.Expr:
    """s with f(z) = z for z >= 0 and s z for z < 0: the positively homogeneous activations."""
    slopes = {
        "relu": sp.Integer(0),
        "leaky_relu": sp.sympify(negative_slope),
        "linear": sp.Integer(1),
    }
    if name not in slopes:
        raise ValueError(
            f"activation={name!r}: the He derivation needs a positively homogeneous f; "
            "use 'relu', 'leaky_relu' or 'linear' (SELU: see theory_gain('selu'))"
        )
    return slopes[name]


def half_line_gaussian_moment(expr: sp.Expr, *, positive: bool) -> sp.Expr:
    """int expr(z) phi(z) dz over z >= 0 (or z < 0): integrals of one half-line stay fast in SymPy,
    where a Piecewise over the whole line is slow."""
    pdf = sp.exp(-(z**2) / 2) / sp.sqrt(2 * sp.pi)
    limits = (z, 0, sp.oo) if positive else (z, -sp.oo, 0)
    return sp.integrate(expr * pdf, limits)


@cache
def second_moment(activation: str, *, negative_slope: sp.Expr = a) -> sp.Expr:
    """E[f(z)^2], z ~ N(0, 1), by SymPy integration (selu: at alpha_01, lambda_01)."""
    if activation == "selu":
        # The fixed point's variance equation says exactly this second moment is 1.
        _, second = selu.moments_exprs()
        a01, l01 = selu.constants_exprs()
        at = {selu.mu: 0, selu.omega: 0, selu.nu: 1, selu.tau: 1, selu.alpha: a01, selu.lam: l01}
        return second.subs(at)
    s = negative_side_slope(activation, negative_slope=negative_slope)
    pos = half_line_gaussian_moment(z**2, positive=True)
    neg = half_line_gaussian_moment((s * z) ** 2, positive=False)
    return sp.simplify(pos + neg)


@cache
def theory_gain(activation: str, *, negative_slope: sp.Expr = a) -> sp.Expr:
    """gain = sqrt(1/E[f(z)^2]): sqrt(2) for relu, sqrt(2/(1+a^2)) for leaky_relu, 1 for linear
    and 1 for SELU (its fixed point has E[selu(z)^2] = 1, hence LeCun's Var[w] = 1/fan)."""
    return sp.sqrt(1 / second_moment(activation, negative_slope=negative_slope))


#: torch's gains that are choices, not derivations (torch.nn.init.calculate_gain docs and source).
TORCH_CHOICES = {"tanh": sp.Rational(5, 3), "selu": sp.Rational(3, 4), "sigmoid": sp.Integer(1)}
_LINEAR = {
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
}


def torch_gain(nonlinearity: str, *, param: float | None = None) -> float:
    """The value torch.nn.init.calculate_gain returns: derived for linear/relu/leaky_relu, the
    documented choices for tanh, selu and sigmoid."""
    if nonlinearity in _LINEAR:
        return float(theory_gain("linear"))
    if nonlinearity == "relu":
        return float(theory_gain("relu"))
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"param={param!r}: leaky_relu's negative slope must be a number")
        return float(theory_gain("leaky_relu").subs(a, sp.Rational(str(slope))))
    if nonlinearity in TORCH_CHOICES:
        return float(TORCH_CHOICES[nonlinearity])
    raise ValueError(
        f"nonlinearity={nonlinearity!r}: unsupported; use one of "
        f"{sorted(_LINEAR | {'relu', 'leaky_relu'} | set(TORCH_CHOICES))}"
    )


def oracles() -> list[Oracle]:
    conv = sp.symbols("out_channels in_channels kernel_h kernel_w", positive=True, integer=True)
    conv_params = {"out_channels": 128, "in_channels": 64, "kernel_h": 3, "kernel_w": 3}
    fans = {"fan_in": 576, "fan_out": 1152}  # that 3x3 conv, 64 -> 128 channels
    slope = {"a": sp.Rational(1, 100)}  # torch's default negative slope

    o = derived_in("init")

    choice = f"{TORCH_GAIN}: a choice (documented value), not a derivation"
    return [
        o(
            "fan_in",
            "fan_in of a conv weight (out, in, kh, kw): shape[1]*prod(shape[2:])",
            fan_in(conv),
            conv_params,
            TORCH_FANS,
            "in_channels*kernel_h*kernel_w",
        ),
        o(
            "fan_out",
            "fan_out of a conv weight (out, in, kh, kw): shape[0]*prod(shape[2:])",
            fan_out(conv),
            conv_params,
            TORCH_FANS,
            "out_channels*kernel_h*kernel_w",
        ),
        o(
            "xavier_variance",
            "Glorot's Var[w]: n Var[w] = 1 with n the mean of the fans",
            xavier_variance_expr(),
            fans,
            f"{GLOROT}, eq. 12",
            "2/(fan_in+fan_out)",
        ),
        o(
            "xavier_uniform_bound",
            "a with Var[U(-a, a)] = a^2/3 = gain^2 * 2/(fan_in+fan_out)",
            xavier_uniform_bound_expr(),
            {**fans, "gain": 1},
            f"{GLOROT}, eq. 16",
            "gain*sqrt(6/(fan_in+fan_out))",
        ),
        o(
            "xavier_normal_std",
            "std with variance gain^2 * 2/(fan_in+fan_out)",
            xavier_normal_std_expr(),
            {**fans, "gain": 1},
            f"{GLOROT}, eq. 12; torch.nn.init",
        ),
        o(
            "kaiming_uniform_bound",
            "a with a^2/3 = gain^2/fan",
            kaiming_uniform_bound_expr(),
            {"fan": 576, "gain": sp.sqrt(2)},
            f"{HE}, eq. 10; torch.nn.init.kaiming_uniform_",
        ),
        o(
            "kaiming_normal_std",
            "std = gain/sqrt(fan)",
            kaiming_normal_std_expr(),
            {"fan": 576, "gain": sp.sqrt(2)},
            f"{HE}, eq. 10",
        ),
        o(
            "second_moment_relu",
            "E[relu(z)^2] = 1/2, z ~ N(0,1)",
            second_moment("relu"),
            {},
            f"{HE}, section 2.2",
        ),
        o(
            "second_moment_leaky_relu",
            "E[leaky_relu(z; a)^2] = (1+a^2)/2",
            second_moment("leaky_relu"),
            slope,
            f"{HE}, eq. 15",
        ),
        o("gain_relu", "sqrt(1/E[relu(z)^2])", theory_gain("relu"), {}, f"{HE}, eq. 10", "sqrt(2)"),
        o(
            "gain_leaky_relu",
            "sqrt(1/E[leaky_relu(z; a)^2])",
            theory_gain("leaky_relu"),
            slope,
            f"{HE}, eq. 15",
            "sqrt(2/(1+a^2))",
        ),
        o("gain_linear", "sqrt(1/E[z^2]) = 1", theory_gain("linear"), {}, f"{GLOROT}; {HE}"),
        o(
            "gain_selu_theory",
            "sqrt(1/E[selu(z)^2]) = 1 at alpha_01, lambda_01 (LeCun normal)",
            theory_gain("selu"),
            {},
            "Klambauer et al. 2017, section 3 (tau = 1)",
            "1",
        ),
        o("gain_tanh_torch", "torch's tanh gain 5/3", TORCH_CHOICES["tanh"], {}, choice, "5/3"),
        o(
            "gain_selu_torch",
            "torch's selu gain 3/4 (found empirically, pytorch PR 50664)",
            TORCH_CHOICES["selu"],
            {},
            choice,
            "3/4",
        ),
    ]

"""Residual blocks: variance of the residual stream, the gradient's identity path, initial loss.

De & Smith 2020, "Batch Normalization Biases Residual Blocks Towards the Identity Function in Deep
Networks" (section 2): x_{l+1} = x_l + F(x_l) with a branch uncorrelated with its input has
Var(x_{l+1}) = Var(x_l) + Var(F(x_l)). A BatchNorm in the branch pins Var(F) near 1 whatever
Var(x_l) is, so the stream grows linearly (var0 + L); a variance-preserving branch without
normalisation (Var F = Var x) doubles it each block (2^L).
He, Zhang, Ren, Sun 2016, "Deep Residual Learning" / "Identity Mappings in Deep Residual Networks":
d(x + F(x))/dx = I + dF/dx.
"""

from __future__ import annotations

from functools import cache

import sympy as sp
from sympy import stats

from theory.oracle import Oracle, derived_in, evaluate

DE_SMITH = "De & Smith 2020, Batch Normalization Biases Residual Blocks Towards the Identity"
HE_2016 = "He et al. 2016, Identity Mappings in Deep Residual Networks, eq. 4-5"

_L = sp.Symbol("L", nonnegative=True, integer=True)  # depth: number of residual blocks
_var0 = sp.Symbol("var0", positive=True)
_gain = sp.Symbol("gain", nonnegative=True)
_C = sp.Symbol("C", positive=True, integer=True)  # number of classes


def add_variance_expr() -> sp.Expr:
    """Var(x + F) for independent x and F (sympy.stats): the variances add."""
    vx, vf = sp.symbols("var_x var_F", positive=True)
    x = stats.Normal("x", 0, sp.sqrt(vx))
    f = stats.Normal("F", 0, sp.sqrt(vf))
    return sp.simplify(stats.variance(x + f))


@cache
def stream_variance_expr(branch: str) -> sp.Expr:
    """Var(x_L) solved from the recurrence by sp.rsolve; branch 'bn' (Var F = 1 each block) or
    'gain' (Var F = gain^2 Var x; gain = 1 is the doubling case)."""
    if branch not in ("bn", "gain"):
        raise ValueError(f"branch={branch!r}: use 'bn' or 'gain'")
    v = sp.Function("v")
    vx, vf = sp.symbols("var_x var_F", positive=True)
    step = add_variance_expr()  # var_x + var_F
    l = sp.Symbol("l", integer=True, nonnegative=True)
    var_f = 1 if branch == "bn" else _gain**2 * v(l)
    recurrence = v(l + 1) - step.subs({vx: v(l), vf: var_f})
    sol = sp.rsolve(recurrence, v(l), {v(0): _var0})
    return sp.simplify(sol.subs(l, _L))


def stream_variance(depth: int, *, var0: float = 1.0, branch: str | float = "bn") -> float:
    """Var(x_depth) of the residual stream: 'bn' var0 + depth, 'doubling' var0 2^depth, or a float
    ``gain`` for a branch with Var F = gain^2 Var x: var0 (1 + gain^2)^depth."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth={depth!r}: must be an int >= 0 (number of residual blocks)")
    if not var0 > 0:
        raise ValueError(f"var0={var0!r}: the input variance must be > 0")
    if branch == "bn":
        expr, params = stream_variance_expr("bn"), {}
    elif branch == "doubling":
        expr, params = stream_variance_expr("gain"), {"gain": 1}
    elif isinstance(branch, (int, float)) and not isinstance(branch, bool) and branch >= 0:
        expr, params = stream_variance_expr("gain"), {"gain": branch}
    else:
        raise ValueError(f"branch={branch!r}: use 'bn', 'doubling' or a float gain >= 0")
    return float(evaluate(expr, {**params, "L": depth, "var0": var0}))


def block_jacobian(n: int) -> tuple[sp.Matrix, sp.Matrix]:
    """(d(x + F(x))/dx, dF/dx) for an arbitrary smooth branch F: R^n -> R^n (SymPy Functions)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: the width must be an int >= 1")
    x = sp.Matrix(sp.symbols(f"x0:{n}", real=True))
    f = sp.Matrix([sp.Function(f"F{i}")(*x) for i in range(n)])
    return (x + f).jacobian(x), f.jacobian(x)


def identity_path_holds(n: int) -> bool:
    """Prove d(x + F(x))/dx - dF/dx = I for width n: the identity path never vanishes."""
    j, df = block_jacobian(n)
    return sp.simplify(j - df) == sp.eye(n)


def linear_block_jacobian_expr(n: int) -> sp.Matrix:
    """d(x + W x)/dx = I + W for a linear branch with symbolic W."""
    x = sp.Matrix(sp.symbols(f"x0:{n}", real=True))
    w = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"w{i}{j}", real=True))
    return (x + w * x).jacobian(x)


def uniform_logits_loss_expr() -> sp.Expr:
    """Cross-entropy -log softmax(z)_y when all C logits equal c: log C, whatever c and y."""
    c = sp.Symbol("c", real=True)
    # softmax_y = e^c / sum_{k<C} e^c; the C equal terms sum to C e^c.
    return sp.simplify(-sp.log(sp.exp(c) / (_C * sp.exp(c))))


def initial_loss(num_classes: int) -> float:
    """ln C: the starting cross-entropy when the network's logits are equal (zero-init last gamma
    makes each residual branch output 0; the head's logits are then nearly equal)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r}: must be an int >= 2")
    return float(evaluate(uniform_logits_loss_expr(), {"C": num_classes}))


def oracles() -> list[Oracle]:
    w_example = {
        "w00": sp.Rational(1, 10),
        "w01": sp.Rational(-2, 10),
        "w10": sp.Rational(3, 10),
        "w11": sp.Rational(-4, 10),
    }

    o = derived_in("residual")

    return [
        o(
            "add_variance",
            "Var(x + F(x)) = Var(x) + Var(F) for an uncorrelated branch",
            add_variance_expr(),
            {"var_x": 1, "var_F": 1},
            f"{DE_SMITH}, section 2",
        ),
        o(
            "stream_variance_bn",
            "BN in the branch (Var F = 1): Var(x_L) = var0 + L (linear)",
            stream_variance_expr("bn"),
            {"var0": 1, "L": 16},
            f"{DE_SMITH}, section 2",
        ),
        o(
            "stream_variance_doubling",
            "unnormalised variance-preserving branch: var0 2^L",
            stream_variance_expr("gain").subs(_gain, 1),
            {"var0": 1, "L": 16},
            f"{DE_SMITH}, section 2",
        ),
        o(
            "stream_variance_gain",
            "branch with Var F = gain^2 Var x: var0 (1 + gain^2)^L",
            stream_variance_expr("gain"),
            {"var0": 1, "L": 16, "gain": sp.Rational(1, 2)},
            f"{DE_SMITH}, section 2",
        ),
        o(
            "linear_block_jacobian",
            "d(x + W x)/dx = I + W (W at an example value)",
            linear_block_jacobian_expr(2),
            w_example,
            HE_2016,
        ),
        o(
            "initial_loss",
            "cross-entropy with equal logits = ln C (zero-init last BN gamma)",
            uniform_logits_loss_expr(),
            {"C": 10},
            "softmax of equal logits; zero-init gamma: Goyal et al. 2017, "
            "Accurate, Large Minibatch SGD",
            "2.302585",
        ),
    ]

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

import math
from functools import cache

import sympy as sp
from sympy import stats

from theory.oracle import Oracle, derived_in, evaluate
from theory.propagation import bn_gradient_growth_expr

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


# --- mean-field predictions the residual checks compare with ----------------------------


def branch_variance(p: float, m: int) -> float:
    """E[Var_batch] of a drop-path branch mask F/(1-p) whose BN output F has batch mean 0 and
    variance 1 (the eps correction var/(var+eps) is below 1e-3 here and neglected): with a
    per-sample mask of mean 1-p, (1/(1-p)^2) E[mean(mask F^2) - mean(mask F)^2]
    = (1 - p/m)/(1 - p). p = 0 gives 1, theory.residual's 'bn' branch."""
    return (1.0 - p / m) / (1.0 - p)


def relu_bn_rate() -> float:
    # pi/(pi-1) = E[relu'(z)^2] / Var[relu(z)] (theory.propagation, Yang et al. 2019).
    return float(evaluate(bn_gradient_growth_expr("relu"), {}))


def gradient_growth_predictions(
    *, n_act: int, depth: int, var0: float, p: float, m: int
) -> tuple[float, float]:
    """(log G_residual, log G_plain) for G = |dL/dx_0|^2 / |dL/dx_L|^2 at init (mean field).

    theory.propagation's heuristic: backward through conv + BN multiplies the squared norm by
    1/Var(BN input)/sigma_w^2 * sigma_w^2, through ReLU by E[relu'^2] = 1/2; a BN-ReLU layer
    nets lambda = pi/(pi-1). A branch with n_act inner ReLUs entered at stream variance V_l
    multiplies it by lambda^n_act / V_l; drop-path by E[mask^2]/(1-p)^2 = 1/(1-p). With the
    identity path (theory.residual: d(x + F)/dx = I + dF/dx, the cross term averaging to 0)
    each block multiplies by 1 + lambda^n_act / ((1-p) V_l), V_l = stream variance at depth l:
        log G_res = sum_l log(1 + lambda^n_act / ((1-p) V_l))   (polynomial in depth).
    Without skips (plain) the depth * (n_act + 1) BN-ReLU layers give
        log G_plain = depth (n_act + 1) log lambda - log 2 - log var0   (exponential in depth),
    the -log 2 and -log var0 from the first and last layer's boundary factors.
    """
    lam = relu_bn_rate()
    v = branch_variance(p, m)
    res = sum(
        math.log1p(lam**n_act / ((1 - p) * v * stream_variance(l, var0=var0 / v)))
        for l in range(depth)
    )
    plain = depth * (n_act + 1) * math.log(lam) - math.log(2.0) - math.log(var0)
    return res, plain

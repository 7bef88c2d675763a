"""The pre-norm residual stream and its fused tail "residual += x; y = norm(residual)".

Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture": a pre-norm block is

    h_{l+1} = h_l + F(norm(h_l))

with norm a layer norm (Ba, Kiros & Hinton 2016) or an RMSNorm (Zhang & Sennrich 2019). Three
facts, each derived below:

1. Variance grows additively. For a branch uncorrelated with the stream,
   Var(h_{l+1}) = Var(h_l) + Var(F(norm(h_l))). The norm's output does not depend on the scale of
   h_l (with eps = 0 it is exactly scale invariant: :func:`branch_input_is_scale_invariant`), so
   Var(F) = v_F is the same at every depth and Var(h_L) = var0 + L v_F: linear, as Xiong et al.'s
   Lemma 2 bounds E||x_l||^2 between (1 + l/2) d and (1 + 3l/2) d, where an unnormalised
   variance-preserving branch doubles it each block (theory.residual).
2. The identity path carries the gradient: d h_{l+1}/d h_l = I + dF/du du/dh, whatever F and the
   norm (:func:`identity_path_holds`). The branch's own contribution is orthogonal to h_l when
   eps = 0 (scale invariance makes (du/dh) h = 0 by Euler's theorem:
   :func:`norm_jacobian_annihilates_stream`).
3. The fused kernel (vLLM's fused_add_rms_norm, Apex and Liger's fused add + norm) takes the
   branch output x and the stream h, writes the new stream residual_out = x + h back, and returns
   y = norm(residual_out). Both outputs are differentiated: for upstream gradients dy and
   d(residual_out), the gradient with respect to x and to h is the same,
   d(residual_out) + J_norm(residual_out)^T dy (:func:`fused_backward_matches`). In a storage
   precision residual_out is rounded before it is normalised: the normalised stream is the
   stored one, not the unrounded sum (reference.prenorm and theory.rounding model that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import sympy as sp
from sympy import stats

from theory import layernorm, rmsnorm
from theory.layernorm import check_length, eps, vanishes
from theory.oracle import Oracle, derived_in, evaluate

XIONG = "Xiong et al. 2020, On Layer Normalization in the Transformer Architecture"
NORMS = ("layer", "rms")

_L = sp.Symbol("L", nonnegative=True, integer=True)  # depth: number of pre-norm blocks
_var0 = sp.Symbol("var0", positive=True)
_var_f = sp.Symbol("var_F", positive=True)


def _check_norm(norm: Any) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}: use 'layer' (LayerNorm) or 'rms' (RMSNorm)")


def normalize(x: Sequence[Any], *, norm: str, eps: Any = eps) -> list[Any]:
    """xhat of one row: (x - mean)/sqrt(var + eps) for 'layer', x/sqrt(mean(x^2) + eps) for 'rms'.
    Works on numbers, mpmath or SymPy."""
    _check_norm(norm)
    if norm == "layer":
        mean, var = layernorm.row_moments(x)
        return [(xi - mean) / _sqrt(var + eps) for xi in x]
    return [xi / _sqrt(rmsnorm.mean_square(x) + eps) for xi in x]


def _sqrt(v: Any) -> Any:
    return sp.sqrt(v) if isinstance(v, sp.Basic) else v**0.5


def _radicand(x: Sequence[Any], norm: str) -> sp.Expr:
    if norm == "layer":
        return layernorm.row_moments(x)[1] + eps
    return rmsnorm.mean_square(x) + eps


# -- the stream's variance -------------------------------------------------------------------------


def add_variance_expr() -> sp.Expr:
    """Var(h + F) for independent h and F (sympy.stats): Var(h) + Var(F)."""
    vh = sp.Symbol("var_h", positive=True)
    h = stats.Normal("h", 0, sp.sqrt(vh))
    f = stats.Normal("F", 0, sp.sqrt(_var_f))
    return sp.simplify(stats.variance(h + f))


@cache
def stream_variance_expr() -> sp.Expr:
    """Var(h_L) from the recurrence v(l+1) = v(l) + var_F, v(0) = var0 (sp.rsolve): the branch sees
    a normalised input, so its variance var_F does not depend on l."""
    v = sp.Function("v")
    l = sp.Symbol("l", integer=True, nonnegative=True)
    vh = sp.Symbol("var_h", positive=True)
    step = add_variance_expr().subs(vh, v(l))
    sol = sp.rsolve(v(l + 1) - step, v(l), {v(0): _var0})
    return sp.simplify(sol.subs(l, _L))


def stream_variance(depth: int, *, var0: float = 1.0, branch_variance: float = 1.0) -> float:
    """Var(h_depth) = var0 + depth * branch_variance for a pre-norm stack (module doc, fact 1)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth={depth!r}: must be an int >= 0 (number of pre-norm blocks)")
    if not var0 > 0:
        raise ValueError(f"var0={var0!r}: the input variance must be > 0")
    if not branch_variance >= 0:
        raise ValueError(
            f"branch_variance={branch_variance!r}: Var(F(norm(h))) must be >= 0 "
            "(1 for a variance-preserving branch)"
        )
    expr = stream_variance_expr()
    return float(evaluate(expr, {"L": depth, "var0": var0, "var_F": branch_variance}))


def linear_branch_variance_expr() -> sp.Expr:
    """Var(F_j) for F(u) = W u, W_jk iid with variance sigma_w2, on a row u = norm(h) of width n:
    sum_k sigma_w2 E[u_k^2] = n sigma_w2 var/(var + eps) by theory.layernorm's output variance
    (for RMSNorm read ms for var). It involves the stream only through var/(var + eps)."""
    n, sigma_w2 = sp.symbols("n sigma_w2", positive=True)
    var = sp.Symbol("var", positive=True)
    return n * sigma_w2 * var / (var + eps)


def branch_input_is_scale_invariant(n: int, *, norm: str) -> bool:
    """Prove norm(c h) = norm(h) for c > 0 with eps = 0 (n symbolic inputs)."""
    check_length(n)
    _check_norm(norm)
    h = list(sp.symbols(f"h0:{n}", real=True))
    c = sp.Symbol("c", positive=True)
    scaled = normalize([c * hi for hi in h], norm=norm, eps=0)
    return all(
        sp.simplify(a - b) == 0 for a, b in zip(scaled, normalize(h, norm=norm, eps=0), strict=True)
    )


# -- the gradient ----------------------------------------------------------------------------------


def block_jacobians(n: int, *, norm: str) -> tuple[sp.Matrix, sp.Matrix]:
    """(d h_{l+1}/d h_l, dF(norm(h))/dh) for an arbitrary smooth branch F: R^n -> R^n."""
    check_length(n)
    h = sp.Matrix(sp.symbols(f"h0:{n}", real=True))
    u = normalize(list(h), norm=norm)
    f = sp.Matrix([sp.Function(f"F{i}")(*u) for i in range(n)])
    return (h + f).jacobian(h), f.jacobian(h)


def identity_path_holds(n: int, *, norm: str) -> bool:
    """Prove d h_{l+1}/d h_l - dF(norm(h))/dh = I: the identity path never vanishes."""
    block, branch = block_jacobians(n, norm=norm)
    # No simplification needed: the branch's terms cancel structurally, leaving I exactly.
    return block - branch == sp.eye(n)


def norm_jacobian_annihilates_stream(n: int, *, norm: str) -> bool:
    """Prove (d norm(h)/dh) h = 0 at eps = 0: the branch's gradient J^T v is orthogonal to h."""
    check_length(n)
    h = sp.Matrix(sp.symbols(f"h0:{n}", real=True))
    jac = sp.Matrix(normalize(list(h), norm=norm, eps=0)).jacobian(h)
    return all(sp.simplify(e) == 0 for e in jac * h)


# -- the fused tail --------------------------------------------------------------------------------


def fused_forward(
    x: Sequence[Any],
    residual: Sequence[Any],
    *,
    norm: str,
    weight: Sequence[Any] | None = None,
    bias: Sequence[Any] | None = None,
    eps: Any = eps,
) -> tuple[list[Any], list[Any]]:
    """(y, residual_out) of one row in exact arithmetic: residual_out = x + residual,
    y = weight * norm(residual_out) (+ bias, layer norm only)."""
    _check_norm(norm)
    if len(x) != len(residual):
        raise ValueError(f"len(x)={len(x)}, len(residual)={len(residual)}: must be equal")
    if norm == "rms" and bias is not None:
        raise ValueError("bias: RMSNorm has none (torch.nn.RMSNorm); pass bias=None")
    n = len(x)
    weight = [1] * n if weight is None else weight
    bias = [0] * n if bias is None else bias
    res = [a + b for a, b in zip(x, residual, strict=True)]
    xhat = normalize(res, norm=norm, eps=eps)
    return [w * h + b for w, h, b in zip(weight, xhat, bias, strict=True)], res


def fused_backward_closed_form(
    x: Sequence[Any],
    residual: Sequence[Any],
    dy: Sequence[Any],
    dresidual_out: Sequence[Any],
    *,
    norm: str,
    weight: Sequence[Any] | None = None,
    eps: Any = eps,
) -> tuple[list[Any], list[Any]]:
    """(dx, dresidual) of the fused tail for one row: both d(residual_out) + the norm's dx at
    residual_out (theory.layernorm / theory.rmsnorm closed forms)."""
    _check_norm(norm)
    res = [a + b for a, b in zip(x, residual, strict=True)]
    if norm == "layer":
        (dnorm,), _, _ = layernorm.backward_closed_form([res], [dy], weight=weight, eps=eps)
    else:
        (dnorm,), _ = rmsnorm.backward_closed_form([res], [dy], weight=weight, eps=eps)
    d = [a + b for a, b in zip(dresidual_out, dnorm, strict=True)]
    return d, list(d)


def fused_backward_matches(
    n: int,
    *,
    norm: str,
    closed_form: Callable[..., tuple[list[Any], list[Any]]] = fused_backward_closed_form,
) -> bool:
    """Prove, for n symbolic inputs, that autodiff of L = sum dy y + sum dres residual_out with
    respect to x and to residual equals ``closed_form``'s (a parameter, so a test can hand in a
    wrong formula, e.g. one that drops d(residual_out), and see the proof fail)."""
    check_length(n)
    _check_norm(norm)
    x = list(sp.symbols(f"x0:{n}", real=True))
    r = list(sp.symbols(f"r0:{n}", real=True))
    dy = list(sp.symbols(f"dy0:{n}", real=True))
    dres = list(sp.symbols(f"dres0:{n}", real=True))
    w = list(sp.symbols(f"w0:{n}", real=True))
    b = list(sp.symbols(f"b0:{n}", real=True)) if norm == "layer" else None
    y, res = fused_forward(x, r, norm=norm, weight=w, bias=b)
    loss = sum(d * yi for d, yi in zip(dy, y, strict=True)) + sum(
        d * v for d, v in zip(dres, res, strict=True)
    )
    dx, dr = closed_form(x, r, dy, dres, norm=norm, weight=w, eps=eps)
    radicand = [_radicand(res, norm)]
    return all(
        vanishes(sp.diff(loss, xi) - a, under_sqrt=radicand)
        and vanishes(sp.diff(loss, ri) - c, under_sqrt=radicand)
        for xi, ri, a, c in zip(x, r, dx, dr, strict=True)
    )


# -- oracles ---------------------------------------------------------------------------------------


def _fused_example() -> dict[str, Any]:
    """x = (1, -1, 2), residual = (0, -1, 2), dy = (1, -1, 3), weight = (2, 1, -1/2), RMSNorm,
    eps = 1e-6, d(residual_out) = 1/2 at element 0."""
    x, r, dy, w = [1, -1, 2], [0, -1, 2], [1, -1, 3], [2, 1, sp.Rational(-1, 2)]
    e = sp.Rational(1, 10**6)
    res = [sp.Integer(a + b) for a, b in zip(x, r, strict=True)]
    ms = rmsnorm.mean_square(res)
    xhat = [v / sp.sqrt(ms + e) for v in res]
    g = [d * wi for d, wi in zip(dy, w, strict=True)]
    return {
        "dres": sp.Rational(1, 2),
        "ms": ms,
        "eps": e,
        "g": g[0],
        "xhat": xhat[0],
        "mean_g_xhat": sum(gi * h for gi, h in zip(g, xhat, strict=True)) / 3,
    }


def oracles() -> list[Oracle]:
    ms = sp.Symbol("ms", positive=True)
    dres, g, xhat, mean_g_xhat = sp.symbols("dres g xhat mean_g_xhat")
    block, branch = block_jacobians(2, norm="layer")
    o = derived_in("prenorm")
    return [
        o(
            "add_variance",
            "Var(h + F(norm(h))) = Var(h) + Var(F) for a branch uncorrelated with the stream",
            add_variance_expr(),
            {"var_h": 1, "var_F": 1},
            f"{XIONG}, section 3.3",
            "var_h + var_F",
        ),
        o(
            "stream_variance",
            "pre-norm stack: Var(h_L) = var0 + L var_F (linear in depth)",
            stream_variance_expr(),
            {"var0": 1, "var_F": 1, "L": 16},
            f"{XIONG}, Lemma 2 (E||x_l||^2 grows linearly in l for Pre-LN)",
            "var0 + L*var_F",
        ),
        o(
            "linear_branch_variance",
            "Var(W norm(h)) = n sigma_w2 var/(var+eps): fixed by the norm, not by the depth",
            linear_branch_variance_expr(),
            {"n": 512, "sigma_w2": sp.Rational(1, 512), "var": 4, "eps": sp.Rational(1, 10**5)},
            f"{XIONG}, section 3.3; {layernorm.BA_2016}",
            "n*sigma_w2*var/(var+eps)",
        ),
        o(
            "identity_path",
            "d h_{l+1}/d h_l - dF(norm(h_l))/d h_l = I (width 2, LayerNorm, any F)",
            block - branch,
            {},
            f"{XIONG}, section 3.3; He et al. 2016, Identity Mappings, eq. 4-5",
            "[[1, 0], [0, 1]]",
        ),
        o(
            "fused_backward_dx",
            "fused add + RMSNorm: dx = dresidual = dres + (g - xhat mean(g xhat))/sqrt(ms+eps)",
            dres + (g - xhat * mean_g_xhat) / sp.sqrt(ms + eps),
            _fused_example(),
            f"{rmsnorm.ZHANG_SENNRICH} (dx of the norm) through residual_out = x + residual",
            "dres + (g - xhat*mean_g_xhat)/sqrt(ms+eps)",
        ),
    ]

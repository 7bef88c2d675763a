"""Layer normalisation: per-row output moments and the backward pass proved from autodiff.

Ba, Kiros & Hinton 2016, "Layer Normalization" (eq. 4). The statistics are taken per row, over
the n values of the trailing ``normalized_shape``; the affine parameters are per element of the
row (torch.nn.LayerNorm's ``elementwise_affine``), shared by all rows:

    xhat_j = (x_j - mean) / sqrt(var + eps),   y_j = w_j xhat_j + b_j,   var biased (/ n).

The backward, with g_j = dy_j w_j (the weight acts before the row reductions, so it cannot be
pulled out of them as batch norm's per-channel gamma can):

    dx_j = 1/(n sigma) [n g_j - sum g - xhat_j sum(g xhat)],   sigma = sqrt(var + eps),
    dw_j = sum over rows of dy_j xhat_j,   db_j = sum over rows of dy_j.

Proof device (as in :mod:`theory.batchnorm`, generalised to several rows): every sqrt(var_r + eps)
is replaced by a new positive symbol S_r, i.e. each subexpression var_r + eps becomes S_r^2. For
one row this is the substitution eps = S^2 - var. The identities then are rational in x, dy, w
and the S_r, which SymPy decides with together() and expand(); an identity that holds for
independent S_r holds in particular at S_r = sqrt(var_r + eps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sympy as sp

from theory.oracle import Oracle, derived_in

BA_2016 = "Ba, Kiros & Hinton 2016, Layer Normalization"
TORCH_LN = "torch.nn.LayerNorm documentation (biased variance, elementwise affine)"

eps = sp.Symbol("eps", positive=True)


def check_length(n: Any, *, name: str = "n", least: int = 2) -> None:
    """Raise ValueError unless ``n`` is an int >= ``least`` (a row length, a count of rows)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < least:
        raise ValueError(f"{name}={n!r}: must be an int >= {least}; pass e.g. {name}={least + 2}")


def row_moments(x: Sequence[Any]) -> tuple[Any, Any]:
    """(mean, biased variance) of one row, as written in Ba et al. (works on any number type)."""
    n = len(x)
    mean = sum(x) / n
    return mean, sum((xi - mean) ** 2 for xi in x) / n


def vanishes(expr: sp.Expr, *, under_sqrt: Sequence[sp.Expr]) -> bool:
    """Decide ``expr == 0`` for all real inputs and eps > 0 by the proof device of the module doc.

    ``under_sqrt``: the radicands (var_r + eps; ms_r + eps for RMSNorm), one per row. With one
    row, eps = S^2 - var everywhere (also where eps stands outside a root, as in var/(var+eps)).
    With several, each power of a radicand becomes a power of its S_r; eps must then be gone, and
    if it is not the device does not apply and the answer is False (never a wrong True).
    """
    expr = sp.sympify(expr)
    if len(under_sqrt) == 1:
        (radicand,) = under_sqrt
        s = sp.Symbol("S0", positive=True)
        return sp.expand(sp.together(expr.subs(eps, s**2 - (radicand - eps)))) == 0
    repl = {sp.expand(b): sp.Symbol(f"S{i}", positive=True) ** 2 for i, b in enumerate(under_sqrt)}
    # Each radicand appears as the base of a power (sqrt and its derivatives); expand() gives
    # it one canonical form, both here and in the keys.
    rational = expr.replace(
        lambda e: e.is_Pow and sp.expand(e.base) in repl,
        lambda e: repl[sp.expand(e.base)] ** e.exp,
    )
    if eps in rational.free_symbols:
        return False
    return sp.expand(sp.together(rational)) == 0


def _sqrt(v: Any) -> Any:
    return sp.sqrt(v) if isinstance(v, sp.Basic) else v**0.5


def _row_symbols(n: int, rows: int) -> dict[str, Any]:
    x = [list(sp.symbols(f"x{r}_0:{n}", real=True)) for r in range(rows)]
    dy = [list(sp.symbols(f"dy{r}_0:{n}", real=True)) for r in range(rows)]
    return {
        "x": x,
        "dy": dy,
        "w": list(sp.symbols(f"w0:{n}", real=True)),
        "b": list(sp.symbols(f"b0:{n}", real=True)),
    }


# -- forward ---------------------------------------------------------------------------------------


def forward_symbolic(n: int) -> tuple[list[sp.Symbol], list[sp.Expr]]:
    """(x, xhat) for one row of n symbolic inputs."""
    check_length(n)
    x = list(sp.symbols(f"x0:{n}", real=True))
    mean, var = row_moments(x)
    return x, [(xi - mean) / sp.sqrt(var + eps) for xi in x]


def forward_moments_match(n: int) -> bool:
    """Prove mean(xhat) = 0 and mean(xhat^2) = var/(var + eps) over a row of n symbolic inputs."""
    x, xhat = forward_symbolic(n)
    _, var = row_moments(x)
    radicand = [var + eps]
    mean_ok = vanishes(sum(xhat) / n, under_sqrt=radicand)
    var_ok = vanishes(sum(h**2 for h in xhat) / n - var / (var + eps), under_sqrt=radicand)
    return mean_ok and var_ok


# -- backward --------------------------------------------------------------------------------------


def backward_symbolic(n: int, *, rows: int = 1) -> dict[str, Any]:
    """dL/dx, dL/dw, dL/db by SymPy differentiation of L = sum dy (w xhat + b) over ``rows`` rows
    of n symbolic inputs: the vector-Jacobian product a backward pass computes for upstream dy."""
    check_length(n)
    check_length(rows, name="rows", least=1)
    sym = _row_symbols(n, rows)
    loss = 0
    for xr, dyr in zip(sym["x"], sym["dy"], strict=True):
        mean, var = row_moments(xr)
        for xi, d, w, b in zip(xr, dyr, sym["w"], sym["b"], strict=True):
            loss += d * (w * (xi - mean) / sp.sqrt(var + eps) + b)
    return {
        **sym,
        "dx": [[sp.diff(loss, xi) for xi in xr] for xr in sym["x"]],
        "dweight": [sp.diff(loss, w) for w in sym["w"]],
        "dbias": [sp.diff(loss, b) for b in sym["b"]],
    }


def backward_closed_form(
    x: Sequence[Sequence[Any]],
    dy: Sequence[Sequence[Any]],
    *,
    weight: Sequence[Any] | None = None,
    eps: Any = 1e-5,
) -> tuple[list[list[Any]], list[Any], list[Any]]:
    """(dx, dweight, dbias) of layer norm over ``x``, a sequence of rows of equal length n.

    dx_j = 1/(n sigma) [n g_j - sum g - xhat_j sum(g xhat)] per row, g = dy * weight;
    dweight_j = sum over rows of dy_j xhat_j; dbias_j = sum over rows of dy_j.
    ``weight=None`` is a weight of ones. Works on numbers, mpmath or SymPy (SymPy numbers
    for exact results: Python ints divide to floats).
    """
    if not x or len(x) != len(dy):
        raise ValueError(
            f"len(x)={len(x)}, len(dy)={len(dy)}: pass equal, non-empty sequences of rows"
        )
    n = len(x[0])
    if n < 2 or any(len(r) != n for r in (*x, *dy)):
        raise ValueError(
            f"rows of lengths {[len(r) for r in x]} (x) and {[len(r) for r in dy]} (dy): every "
            "row of x and dy needs the same length n >= 2"
        )
    if weight is None:
        weight = [1] * n
    if len(weight) != n:
        raise ValueError(f"len(weight)={len(weight)}: need one weight per row element (n={n})")
    dx, dweight, dbias = [], [0] * n, [0] * n
    for xr, dyr in zip(x, dy, strict=True):
        mean, var = row_moments(xr)
        inv_sigma = 1 / _sqrt(var + eps)
        xhat = [(xi - mean) * inv_sigma for xi in xr]
        g = [d * w for d, w in zip(dyr, weight, strict=True)]
        sum_g = sum(g)
        sum_g_xhat = sum(gi * h for gi, h in zip(g, xhat, strict=True))
        dx.append(
            [
                inv_sigma / n * (n * gi - sum_g - h * sum_g_xhat)
                for gi, h in zip(g, xhat, strict=True)
            ]
        )
        dweight = [acc + d * h for acc, d, h in zip(dweight, dyr, xhat, strict=True)]
        dbias = [acc + d for acc, d in zip(dbias, dyr, strict=True)]
    return dx, dweight, dbias


def backward_matches_closed_form(
    n: int,
    *,
    rows: int = 1,
    closed_form: Callable[..., tuple[Any, Any, Any]] = backward_closed_form,
) -> bool:
    """Prove, for ``rows`` rows of n fully symbolic inputs and symbolic per-element weight, that
    autodiff's gradients equal ``closed_form``'s (a parameter, so a test can hand in a wrong
    formula and see the proof fail)."""
    sym = backward_symbolic(n, rows=rows)
    dx, dweight, dbias = closed_form(sym["x"], sym["dy"], weight=sym["w"], eps=eps)
    radicands = [row_moments(xr)[1] + eps for xr in sym["x"]]
    pairs = [
        *(
            (a, c)
            for ar, cr in zip(sym["dx"], dx, strict=True)
            for a, c in zip(ar, cr, strict=True)
        ),
        *zip(sym["dweight"], dweight, strict=True),
        *zip(sym["dbias"], dbias, strict=True),
    ]
    return all(vanishes(auto - closed, under_sqrt=radicands) for auto, closed in pairs)


# -- oracles ---------------------------------------------------------------------------------------


def _backward_example() -> dict[str, Any]:
    """The aggregates of one row x = (1, 2, 4), dy = (1, -1, 3), weight = (2, 1, -1/2), at j = 0."""
    x, dy, w = [1, 2, 4], [1, -1, 3], [2, 1, sp.Rational(-1, 2)]
    e = sp.Rational(1, 10**5)
    mean, var = row_moments([sp.Integer(v) for v in x])
    xhat = [(v - mean) / sp.sqrt(var + e) for v in x]
    g = [d * wi for d, wi in zip(dy, w, strict=True)]
    return {
        "n": 3,
        "var": var,
        "eps": e,
        "g": g[0],
        "dy": dy[0],
        "xhat": xhat[0],
        "sum_g": sum(g),
        "sum_g_xhat": sum(gi * h for gi, h in zip(g, xhat, strict=True)),
    }


def oracles() -> list[Oracle]:
    var = sp.Symbol("var", positive=True)
    n_s, g, xhat, sum_g, sum_g_xhat = sp.symbols("n g xhat sum_g sum_g_xhat")
    dy, sum_dy, sum_dy_xhat = sp.symbols("dy sum_dy sum_dy_xhat")
    sigma = sp.sqrt(var + eps)
    o = derived_in("layernorm")
    proof = "proved equal to SymPy autodiff for n = 2..6 by backward_matches_closed_form"
    return [
        o(
            "output_mean",
            "per-row mean of xhat (proved for n = 2..6)",
            sp.Integer(0),
            {},
            f"{BA_2016}, eq. 4",
            "0",
        ),
        o(
            "output_variance",
            "per-row biased variance of xhat (proved for n = 2..6)",
            var / (var + eps),
            {"var": 1, "eps": sp.Rational(1, 10**5)},
            f"{BA_2016}, eq. 4",
            "var/(var+eps)",
        ),
        o(
            "backward_dx",
            f"dL/dx_j with g = dy * weight ({proof})",
            (n_s * g - sum_g - xhat * sum_g_xhat) / (n_s * sigma),
            _backward_example(),
            f"{BA_2016} (chain rule through mean and variance)",
            "(n*g - sum_g - xhat*sum_g_xhat)/(n*sqrt(var+eps))",
        ),
        o(
            "backward_dweight",
            f"dL/dweight_j = sum over rows of dy_j xhat_j ({proof}, rows = 1, 2)",
            dy * xhat,
            _backward_example(),
            TORCH_LN,
            "dy*xhat",
        ),
        o(
            "backward_dbias",
            f"dL/dbias_j = sum over rows of dy_j ({proof})",
            dy,
            _backward_example(),
            TORCH_LN,
            "dy",
        ),
        o(
            "backward_dx_no_weight_reduces_to_bn",
            "with weight 1 the row formula is batch norm's per-channel dx with m = n",
            ((n_s * g - sum_g - xhat * sum_g_xhat) / (n_s * sigma)).subs(
                {g: dy, sum_g: sum_dy, sum_g_xhat: sum_dy_xhat}
            ),
            {**_backward_example(), "sum_dy": 3, "sum_dy_xhat": 0},
            f"{BA_2016}; Ioffe & Szegedy 2015, section 3",
            "(n*dy - sum_dy - xhat*sum_dy_xhat)/(n*sqrt(var+eps))",
        ),
    ]

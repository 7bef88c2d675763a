"""RMS normalisation: the output's mean square and the backward pass proved from autodiff.

Zhang & Sennrich 2019, "Root Mean Square Layer Normalization" (eq. 4). Per row of n values (the
trailing ``normalized_shape``), with a per-element weight and no bias (torch.nn.RMSNorm has none):

    ms = mean(x^2),   r = sqrt(ms + eps),   xhat_j = x_j / r,   y_j = w_j xhat_j.

No mean is subtracted: the statistic is a sum of non-negative terms, so it suffers no
cancellation (theory.rounding's bound for it has no condition number kappa). The normalised row
has mean square ms/(ms + eps) (not 1: eps shrinks it, as for layer norm's variance).

Backward, with g = dy * w (proved below from SymPy autodiff of L = sum dy y for n = 2..6):

    dx_j = (1/r) [g_j - xhat_j mean(g xhat)],   dw_j = sum over rows of dy_j xhat_j.

The second term is the dependence of r on x; dropping it is the RMSNorm analogue of batch
norm's "statistics as constants" bug. Proof device: :func:`theory.layernorm.vanishes` with the
radicand ms + eps (eps = S^2 - ms for one row).

``eps=None`` (torch.nn.RMSNorm's and F.rms_norm's default): torch 2.13 documents and does
``torch.finfo(opmath).eps`` where opmath is the type the kernel computes in: float32 for
float32, bfloat16 and float16 inputs (2^-23), float64 for float64 (2^-52). It is NOT the finfo of
a half-precision input (bfloat16's 2^-7 would be 65536 times larger); tests/test_theory_rmsnorm.py
measures this against F.rms_norm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sympy as sp

from theory.layernorm import check_length, eps, vanishes
from theory.oracle import Oracle, derived_in

ZHANG_SENNRICH = "Zhang & Sennrich 2019, Root Mean Square Layer Normalization"
TORCH_RMS = (
    "torch.nn.RMSNorm documentation (torch 2.13): eps=None uses torch.finfo of the computation "
    "(opmath) type"
)

#: The dtype an RMSNorm kernel computes in for each input dtype (torch's opmath type): what
#: ``eps=None`` takes the machine epsilon of.
OPMATH = {
    "float64": "float64",
    "float32": "float32",
    "bfloat16": "float32",
    "float16": "float32",
}

#: Machine epsilon (the gap from 1 to the next number: 2u, twice the unit roundoff) by dtype.
MACHINE_EPS_BITS = {"float64": 52, "float32": 23, "bfloat16": 7, "float16": 10}


def default_eps(dtype: Any) -> float:
    """torch's ``eps=None`` for an input of ``dtype``: finfo(opmath type).eps (module doc)."""
    key = str(dtype).removeprefix("torch.")
    if key not in OPMATH:
        raise ValueError(
            f"dtype={dtype!r}: RMSNorm's eps=None is defined for {sorted(OPMATH)}; pass eps "
            "explicitly for other types"
        )
    return 2.0 ** -MACHINE_EPS_BITS[OPMATH[key]]


def mean_square(x: Sequence[Any]) -> Any:
    """mean(x^2) of one row (works on numbers, mpmath or SymPy)."""
    return sum(xi * xi for xi in x) / len(x)


def _sqrt(v: Any) -> Any:
    return sp.sqrt(v) if isinstance(v, sp.Basic) else v**0.5


# -- forward ---------------------------------------------------------------------------------------


def forward_symbolic(n: int) -> tuple[list[sp.Symbol], list[sp.Expr]]:
    """(x, xhat) for one row of n symbolic inputs."""
    check_length(n)
    x = list(sp.symbols(f"x0:{n}", real=True))
    r = sp.sqrt(mean_square(x) + eps)
    return x, [xi / r for xi in x]


def forward_moments_match(n: int) -> bool:
    """Prove mean(xhat^2) = ms/(ms + eps) over a row of n symbolic inputs."""
    x, xhat = forward_symbolic(n)
    ms = mean_square(x)
    return vanishes(mean_square(xhat) - ms / (ms + eps), under_sqrt=[ms + eps])


# -- backward --------------------------------------------------------------------------------------


def backward_symbolic(n: int, *, rows: int = 1) -> dict[str, Any]:
    """dL/dx and dL/dw by SymPy differentiation of L = sum dy (w xhat) over ``rows`` rows."""
    check_length(n)
    check_length(rows, name="rows", least=1)
    x = [list(sp.symbols(f"x{r}_0:{n}", real=True)) for r in range(rows)]
    dy = [list(sp.symbols(f"dy{r}_0:{n}", real=True)) for r in range(rows)]
    w = list(sp.symbols(f"w0:{n}", real=True))
    loss = 0
    for xr, dyr in zip(x, dy, strict=True):
        r = sp.sqrt(mean_square(xr) + eps)
        loss += sum(d * wi * xi / r for xi, d, wi in zip(xr, dyr, w, strict=True))
    return {
        "x": x,
        "dy": dy,
        "w": w,
        "dx": [[sp.diff(loss, xi) for xi in xr] for xr in x],
        "dweight": [sp.diff(loss, wi) for wi in w],
    }


def backward_closed_form(
    x: Sequence[Sequence[Any]],
    dy: Sequence[Sequence[Any]],
    *,
    weight: Sequence[Any] | None = None,
    eps: Any = 1e-6,
) -> tuple[list[list[Any]], list[Any]]:
    """(dx, dweight) of RMSNorm over ``x``, a sequence of rows of equal length n.

    dx_j = (1/r) [g_j - xhat_j mean(g xhat)] per row, r = sqrt(ms + eps), xhat = x/r,
    g = dy * weight; dweight_j = sum over rows of dy_j xhat_j. ``weight=None`` is ones; ``eps``
    is a number here (resolve torch's None with :func:`default_eps`). Works on numbers, mpmath
    or SymPy (SymPy numbers for exact results: Python ints divide to floats).
    """
    if not x or len(x) != len(dy):
        raise ValueError(
            f"len(x)={len(x)}, len(dy)={len(dy)}: pass equal, non-empty sequences of rows"
        )
    n = len(x[0])
    if n < 1 or any(len(r) != n for r in (*x, *dy)):
        raise ValueError(
            f"rows of lengths {[len(r) for r in x]} (x) and {[len(r) for r in dy]} (dy): every "
            "row of x and dy needs the same length n >= 1"
        )
    if eps is None:
        raise ValueError("eps=None: pass a number; torch's None is default_eps(dtype)")
    if weight is None:
        weight = [1] * n
    if len(weight) != n:
        raise ValueError(f"len(weight)={len(weight)}: need one weight per row element (n={n})")
    dx, dweight = [], [0] * n
    for xr, dyr in zip(x, dy, strict=True):
        inv_r = 1 / _sqrt(mean_square(xr) + eps)
        xhat = [xi * inv_r for xi in xr]
        g = [d * w for d, w in zip(dyr, weight, strict=True)]
        mean_g_xhat = sum(gi * h for gi, h in zip(g, xhat, strict=True)) / n
        dx.append([inv_r * (gi - h * mean_g_xhat) for gi, h in zip(g, xhat, strict=True)])
        dweight = [acc + d * h for acc, d, h in zip(dweight, dyr, xhat, strict=True)]
    return dx, dweight


def backward_matches_closed_form(
    n: int,
    *,
    rows: int = 1,
    closed_form: Callable[..., tuple[Any, Any]] = backward_closed_form,
) -> bool:
    """Prove, for ``rows`` rows of n symbolic inputs and a symbolic per-element weight, that
    autodiff's gradients equal ``closed_form``'s (a parameter, so a test can hand in a wrong
    formula, e.g. one without the xhat mean(g xhat) term, and see the proof fail)."""
    sym = backward_symbolic(n, rows=rows)
    dx, dweight = closed_form(sym["x"], sym["dy"], weight=sym["w"], eps=eps)
    radicands = [mean_square(xr) + eps for xr in sym["x"]]
    pairs = [
        *(
            (a, c)
            for ar, cr in zip(sym["dx"], dx, strict=True)
            for a, c in zip(ar, cr, strict=True)
        ),
        *zip(sym["dweight"], dweight, strict=True),
    ]
    return all(vanishes(auto - closed, under_sqrt=radicands) for auto, closed in pairs)


# -- oracles ---------------------------------------------------------------------------------------


def _backward_example() -> dict[str, Any]:
    """One row x = (1, -2, 4), dy = (1, -1, 3), weight = (2, 1, -1/2), eps = 1e-6, at j = 0."""
    x, dy, w = [1, -2, 4], [1, -1, 3], [2, 1, sp.Rational(-1, 2)]
    e = sp.Rational(1, 10**6)
    ms = mean_square([sp.Integer(v) for v in x])
    r = sp.sqrt(ms + e)
    xhat = [v / r for v in x]
    g = [d * wi for d, wi in zip(dy, w, strict=True)]
    return {
        "ms": ms,
        "eps": e,
        "g": g[0],
        "dy": dy[0],
        "xhat": xhat[0],
        "mean_g_xhat": sum(gi * h for gi, h in zip(g, xhat, strict=True)) / 3,
    }


def oracles() -> list[Oracle]:
    ms = sp.Symbol("ms", positive=True)
    g, xhat, mean_g_xhat, dy = sp.symbols("g xhat mean_g_xhat dy")
    o = derived_in("rmsnorm")
    proof = "proved equal to SymPy autodiff for n = 2..6 by backward_matches_closed_form"
    return [
        o(
            "output_mean_square",
            "per-row mean of xhat^2 (proved for n = 2..6)",
            ms / (ms + eps),
            {"ms": 1, "eps": sp.Rational(1, 10**6)},
            f"{ZHANG_SENNRICH}, eq. 4",
            "ms/(ms+eps)",
        ),
        o(
            "backward_dx",
            f"dL/dx_j with g = dy * weight ({proof})",
            (g - xhat * mean_g_xhat) / sp.sqrt(ms + eps),
            _backward_example(),
            f"{ZHANG_SENNRICH}, section 3 (gradient of the RMS)",
            "(g - xhat*mean_g_xhat)/sqrt(ms+eps)",
        ),
        o(
            "backward_dweight",
            f"dL/dweight_j = sum over rows of dy_j xhat_j ({proof})",
            dy * xhat,
            _backward_example(),
            ZHANG_SENNRICH,
            "dy*xhat",
        ),
        *(
            o(
                f"default_eps_{name}",
                f"eps=None for {name} input: finfo({OPMATH[name]}).eps",
                sp.Integer(2) ** -MACHINE_EPS_BITS[OPMATH[name]],
                {},
                TORCH_RMS,
                f"2**-{MACHINE_EPS_BITS[OPMATH[name]]}",
            )
            for name in OPMATH
        ),
    ]

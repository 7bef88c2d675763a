"""Group normalisation: layer norm's statistics over each group, with a per-channel affine.

Wu & He 2018, "Group Normalization" (eq. 1-3). For an input (N, C, *spatial) and G groups, group
k of sample i holds the C/G consecutive channels k C/G .. (k+1) C/G - 1 at every spatial
position: n = (C/G) * prod(spatial) values. Each group is normalised like one layer-norm row
(:mod:`theory.layernorm`, biased variance); the affine is per channel (w_c, b_c), shared by the
samples and the spatial positions:

    xhat = (x - mean_ik) / sqrt(var_ik + eps),   y_icp = w_c xhat_icp + b_c.

So the backward is layer norm's row formula on each group with g = dy * w_c (the weight varies
inside a group when C/G > 1, so it stays inside the sums), and the parameter gradients reduce
over the samples and the spatial positions of one channel:

    dx = 1/(n sigma) [n g - sum_group g - xhat sum_group(g xhat)],
    dw_c = sum over (i, p) of dy xhat,   db_c = sum over (i, p) of dy.

G = 1 is layer norm over (C, *spatial) with a per-channel affine; G = C is instance norm.
Proof device: :func:`theory.layernorm.vanishes`, one radicand var_ik + eps per group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sympy as sp

from theory import layernorm
from theory.layernorm import check_length, eps, row_moments, vanishes
from theory.oracle import Oracle, derived_in

WU_HE = "Wu & He 2018, Group Normalization"


def check_groups(channels: Any, groups: Any, spatial: Any) -> int:
    """Validate (C, G, prod(spatial)) and return the group size n = (C/G) * spatial (>= 2)."""
    check_length(channels, name="channels", least=1)
    check_length(groups, name="groups", least=1)
    check_length(spatial, name="spatial", least=1)
    if channels % groups:
        raise ValueError(
            f"groups={groups!r} does not divide channels={channels!r}: GroupNorm needs C % G == 0 "
            f"(torch raises too); pick a divisor of {channels}"
        )
    n = channels // groups * spatial
    if n < 2:
        raise ValueError(
            f"channels={channels}, groups={groups}, spatial={spatial}: a group of n = {n} value "
            "has variance 0 and xhat 0 identically; use a group of n >= 2 values"
        )
    return n


def _group_of(channels: int, groups: int) -> list[int]:
    """The group of each channel: consecutive channels, C/G per group (torch's layout)."""
    per = channels // groups
    return [c // per for c in range(channels)]


def _sample_symbols(tag: str, channels: int, spatial: int, i: int) -> list[list[sp.Symbol]]:
    return [list(sp.symbols(f"{tag}{i}_{c}_0:{spatial}", real=True)) for c in range(channels)]


def _groups_of_sample(x: Sequence[Sequence[Any]], groups: int) -> list[list[Any]]:
    """One sample's (C, spatial) values as G rows of n = (C/G) spatial values (channel-major)."""
    per = len(x) // groups
    return [[v for c in range(k * per, (k + 1) * per) for v in x[c]] for k in range(groups)]


# -- forward ---------------------------------------------------------------------------------------


def forward_symbolic(
    channels: int, groups: int, spatial: int
) -> tuple[list[list[sp.Symbol]], list[list[sp.Expr]]]:
    """(x, xhat) for one sample of (channels, spatial) symbolic inputs."""
    check_groups(channels, groups, spatial)
    x = _sample_symbols("x", channels, spatial, 0)
    stats = [row_moments(row) for row in _groups_of_sample(x, groups)]
    group = _group_of(channels, groups)
    xhat = [
        [(v - stats[group[c]][0]) / sp.sqrt(stats[group[c]][1] + eps) for v in x[c]]
        for c in range(channels)
    ]
    return x, xhat


def forward_moments_match(channels: int, groups: int, spatial: int) -> bool:
    """Prove that each group of xhat has mean 0 and biased variance var/(var + eps)."""
    x, xhat = forward_symbolic(channels, groups, spatial)
    n = channels // groups * spatial
    ok = True
    for row, hrow in zip(
        _groups_of_sample(x, groups), _groups_of_sample(xhat, groups), strict=True
    ):
        var = row_moments(row)[1]
        radicand = [var + eps]
        ok &= vanishes(sum(hrow) / n, under_sqrt=radicand)
        ok &= vanishes(sum(h**2 for h in hrow) / n - var / (var + eps), under_sqrt=radicand)
    return ok


# -- backward --------------------------------------------------------------------------------------


def backward_symbolic(channels: int, groups: int, spatial: int, *, samples: int = 1) -> dict:
    """dL/dx, dL/dw, dL/db by SymPy differentiation of L = sum dy (w_c xhat + b_c) over
    ``samples`` samples of (channels, spatial) symbolic inputs."""
    check_groups(channels, groups, spatial)
    check_length(samples, name="samples", least=1)
    x = [_sample_symbols("x", channels, spatial, i) for i in range(samples)]
    dy = [_sample_symbols("dy", channels, spatial, i) for i in range(samples)]
    w = list(sp.symbols(f"w0:{channels}", real=True))
    b = list(sp.symbols(f"b0:{channels}", real=True))
    group = _group_of(channels, groups)
    loss = 0
    for xs, dys in zip(x, dy, strict=True):
        stats = [row_moments(row) for row in _groups_of_sample(xs, groups)]
        for c in range(channels):
            mean, var = stats[group[c]]
            for v, d in zip(xs[c], dys[c], strict=True):
                loss += d * (w[c] * (v - mean) / sp.sqrt(var + eps) + b[c])
    return {
        "x": x,
        "dy": dy,
        "w": w,
        "b": b,
        "dx": [[[sp.diff(loss, v) for v in ch] for ch in xs] for xs in x],
        "dweight": [sp.diff(loss, wc) for wc in w],
        "dbias": [sp.diff(loss, bc) for bc in b],
    }


def backward_closed_form(
    x: Sequence[Sequence[Sequence[Any]]],
    dy: Sequence[Sequence[Sequence[Any]]],
    *,
    groups: int,
    weight: Sequence[Any] | None = None,
    eps: Any = 1e-5,
) -> tuple[list[list[list[Any]]], list[Any], list[Any]]:
    """(dx, dweight, dbias) of group norm; ``x`` and ``dy`` are (N, C, spatial) nested sequences.

    Each group of each sample is one row of :func:`theory.layernorm.backward_closed_form` with the
    per-element weight w_c (repeated over the channel's spatial positions); dweight_c and dbias_c
    gather the row results of channel c over samples and positions. Works on numbers, mpmath or
    SymPy (SymPy numbers for exact results: Python ints divide to floats).
    """
    if not x or len(x) != len(dy):
        raise ValueError(f"len(x)={len(x)}, len(dy)={len(dy)}: pass equal, non-empty batches")
    channels, spatial = len(x[0]), len(x[0][0]) if x[0] else 0
    shapes = {(len(s), *(len(ch) for ch in s)) for s in (*x, *dy)}
    if shapes != {(channels, *([spatial] * channels))}:
        raise ValueError(
            f"x and dy must be (N, C, spatial) with one shape for every sample; got per-sample "
            f"(C, spatial...) {sorted(shapes)}"
        )
    check_groups(channels, groups, spatial)
    if weight is None:
        weight = [1] * channels
    if len(weight) != channels:
        raise ValueError(f"len(weight)={len(weight)}: need one weight per channel (C={channels})")
    per = channels // groups
    dx = [[[None] * spatial for _ in range(channels)] for _ in x]
    dweight, dbias = [0] * channels, [0] * channels
    for i, (xs, dys) in enumerate(zip(x, dy, strict=True)):
        for k, (row, drow) in enumerate(
            zip(_groups_of_sample(xs, groups), _groups_of_sample(dys, groups), strict=True)
        ):
            chans = range(k * per, (k + 1) * per)
            w_row = [weight[c] for c in chans for _ in range(spatial)]
            (dx_row,), dw_row, db_row = layernorm.backward_closed_form(
                [row], [drow], weight=w_row, eps=eps
            )
            for j, c in enumerate(chans):
                dx[i][c] = dx_row[j * spatial : (j + 1) * spatial]
                dweight[c] += sum(dw_row[j * spatial : (j + 1) * spatial])
                dbias[c] += sum(db_row[j * spatial : (j + 1) * spatial])
    return dx, dweight, dbias


def backward_matches_closed_form(
    channels: int,
    groups: int,
    spatial: int,
    *,
    samples: int = 1,
    closed_form: Callable[..., tuple[Any, Any, Any]] = backward_closed_form,
) -> bool:
    """Prove, for ``samples`` samples of symbolic inputs and a symbolic per-channel affine, that
    autodiff's gradients equal ``closed_form``'s (a parameter, so a test can hand in a wrong
    formula and see the proof fail)."""
    sym = backward_symbolic(channels, groups, spatial, samples=samples)
    dx, dweight, dbias = closed_form(sym["x"], sym["dy"], groups=groups, weight=sym["w"], eps=eps)
    radicands = [
        row_moments(row)[1] + eps for xs in sym["x"] for row in _groups_of_sample(xs, groups)
    ]
    flat = [
        (a, c)
        for axs, cxs in zip(sym["dx"], dx, strict=True)
        for ach, cch in zip(axs, cxs, strict=True)
        for a, c in zip(ach, cch, strict=True)
    ]
    pairs = [
        *flat,
        *zip(sym["dweight"], dweight, strict=True),
        *zip(sym["dbias"], dbias, strict=True),
    ]
    return all(vanishes(auto - closed, under_sqrt=radicands) for auto, closed in pairs)


# -- oracles ---------------------------------------------------------------------------------------


def oracles() -> list[Oracle]:
    var = sp.Symbol("var", positive=True)
    c_s, g_s, hw = sp.symbols("C G HW", positive=True, integer=True)
    n_s, g, xhat, sum_g, sum_g_xhat = sp.symbols("n g xhat sum_g sum_g_xhat")
    o = derived_in("groupnorm")
    proof = "proved equal to SymPy autodiff by backward_matches_closed_form (group sizes 2..6)"
    return [
        o(
            "group_size",
            "values per group: C/G channels times all spatial positions",
            c_s / g_s * hw,
            {"C": 32, "G": 8, "HW": 49},
            f"{WU_HE}, eq. 3 (S_i)",
            "C/G*HW",
        ),
        o(
            "output_mean",
            "per-group mean of xhat (proved for group sizes 2..6)",
            sp.Integer(0),
            {},
            f"{WU_HE}, eq. 1-2",
            "0",
        ),
        o(
            "output_variance",
            "per-group biased variance of xhat (proved for group sizes 2..6)",
            var / (var + eps),
            {"var": 1, "eps": sp.Rational(1, 10**5)},
            f"{WU_HE}, eq. 1-2",
            "var/(var+eps)",
        ),
        o(
            "backward_dx",
            f"dL/dx in a group of n values, g = dy * w_c ({proof})",
            (n_s * g - sum_g - xhat * sum_g_xhat) / (n_s * sp.sqrt(var + eps)),
            {
                "n": 4,
                "var": sp.Rational(5, 4),
                "eps": sp.Rational(1, 10**5),
                "g": 1,
                "xhat": sp.Rational(1, 2),
                "sum_g": 2,
                "sum_g_xhat": -1,
            },
            f"{WU_HE}; {layernorm.BA_2016} row formula per group",
            "(n*g - sum_g - xhat*sum_g_xhat)/(n*sqrt(var+eps))",
        ),
    ]

"""Row-normalisation cases (LayerNorm, RMSNorm and the fused pre-norm tail): a small, printable
description Hypothesis draws and shrinks, and the data it describes.

A row normalisation takes its statistics over the trailing ``normalized_shape`` of its input; the
leading dimensions index the rows. A :class:`RowCase` holds every dimension such a kernel can
branch on (DESIGN.md, "The configuration space"): the input's rank and how many trailing
dimensions are normalised (one or several), the hidden size n (2^k - 1, 2^k, 2^k + 1 out to 16k,
and the hidden sizes of real models such as 5120 and 14336) and the row count, within the
profile's element budget (few long rows or many short ones); the activations' dtype and the
parameters' (float32 weights with bfloat16 activations, and the reverse); the layout of the input
and of the incoming gradient separately; the constructor arguments (elementwise_affine, LayerNorm's
bias, eps from 1e-12 to 1e-1 and RMSNorm's eps=None); and the *law* of each row's values
(distribution, condition number kappa = sqrt(1 + mean^2/var), scale, seed). As in
verify/strategies/batchnorm.py the data stay out of the case, so counterexamples are short.

``kind`` says which norm a case is for: "layer" (centred: kappa is what the variance's error
grows with; eps is a number; LayerNorm has a bias switch) or "rms" (no centring; eps may be
None, torch's documented default). :func:`dimensions` lists what a target can reach: the
report's coverage table.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from verify.dimensions import LAYOUTS
from verify.strategies.common import (
    DISTRIBUTIONS,
    band,
    edge_class,
    evenly,
    log_band,
    reachable_bands,
    round_to,
    sizes,
)
from verify.strategies.pins import choose, chosen_band, pin
from verify.targets.base import Target

#: Largest finite float16 is 65504: "near the float16 limit" draws magnitudes up to this.
FLOAT16_NEAR_MAX = 6.0e4
#: The longest row drawn: past 16k, the largest single tile of the common kernels.
MAX_HIDDEN = 2**14 + 1
#: The most rows drawn, whatever the budget ("several thousand").
MAX_ROWS = 8193
#: Hidden sizes of real models (BERT 768, Llama 4096 / 5120 / 8192, Mistral's 14336 MLP width,
#: 16384): kernels are tuned and tested at a few of these and break at the others.
MODEL_HIDDEN = (768, 1024, 2048, 3072, 4096, 5120, 8192, 14336, 16384)
#: The input ranks a row normalisation's cases draw: (rows, n), (batch, tokens, n) and 4-D
#: (whose channels_last layout is a dense order other than the logical one).
ROW_RANKS = (2, 3, 4)
#: What a row norm's cases draw for the compiled targets: each new shape is a recompilation
#: (seconds on a CPU), so they vary values, eps and the switches, not the shape.
COMPILED_SHAPES = ((8, 64), (2, 3, 96))

#: Bands of the coverage table.
HIDDEN_BANDS = (1, 64, 1024, 4096, 16384)
ROW_BANDS = (1, 16, 256, 4096)
EPS_BANDS = (1e-12, 1e-9, 1e-6, 1e-3, 1e-1)
EDGES = ("1", "2^k-1", "2^k", "2^k+1", "other")
KAPPA_BANDS = (1.0, 10.0, 1e2, 1e3)
#: Parameter dtypes a row norm may be given beside its activations' (the param_dtypes checks).
PARAM_DTYPES = ("float32", "bfloat16", "float16", "float64")

#: The incoming gradient's laws: zero-mean normal; offset per feature (a loss through a bias or
#: a mean: dbias = sum dy grows with the rows); mostly zeros (behind a ReLU); and the output's
#: own direction, dy ~ xhat (the gradient of a loss like |y|^2 / 2: dweight = sum dy xhat grows
#: with the rows). A parameter gradient summed coarsely over the rows shows only where its sum
#: grows: under the last two laws, not under zero-mean noise.
GRAD_LAWS = ("normal", "offset", "sparse", "output")

DTYPE_KAPPA = {"float32": 4.0, "float64": 6.0, "bfloat16": 1.0, "float16": 2.0}
DTYPE_SCALE = {
    "float32": (-6.0, 6.0),
    "float64": (-6.0, 6.0),
    "bfloat16": (-6.0, 6.0),
    "float16": (-2.0, 2.0),
}


@dataclass(frozen=True)
class RowCase:
    """One call of a row normalisation: ``shape`` = (*leading, *normalized_shape), the last
    ``normalized_dims`` dimensions normalised."""

    shape: tuple[int, ...]
    normalized_dims: int = 1
    kind: str = "layer"  # "layer" (LayerNorm) or "rms" (RMSNorm)
    dtype: str = "float32"
    param_dtype: str = "float32"  # weight (and bias) dtype
    distribution: str = "normal"
    log10_kappa: float = 0.0  # per-row |mean|/std ~ 10**log10_kappa (0: mean 0)
    log10_scale: float = 0.0  # per-row std ~ 10**log10_scale
    seed: int = 0
    eps: float | None = 1e-5  # None: RMSNorm's default, finfo(opmath type).eps
    affine: bool = True  # elementwise_affine
    bias: bool = True  # LayerNorm(bias=...); RMSNorm has none
    x_layout: str = "contiguous"  # verify.dimensions.LAYOUTS
    dy_layout: str = "contiguous"
    grad_law: str = "normal"  # GRAD_LAWS

    @property
    def normalized_shape(self) -> tuple[int, ...]:
        return self.shape[len(self.shape) - self.normalized_dims :]

    @property
    def n(self) -> int:
        """Values per row: the product of normalized_shape."""
        return math.prod(self.normalized_shape)

    @property
    def rows(self) -> int:
        return math.prod(self.shape[: len(self.shape) - self.normalized_dims])

    def coverage(self) -> dict[str, str | tuple[str, ...]]:
        """The configuration this case is in, as the coverage table's dimensions and values."""
        out = {
            "dtype": self.dtype,
            "param dtype": self.param_dtype,
            "rank": f"{len(self.shape)}-D",
            "normalized dims": str(self.normalized_dims),
            "x layout": self.x_layout,
            "dy layout": self.dy_layout,
            "elementwise_affine": str(self.affine),
            "bias": str(self.bias and self.affine),
            "eps": "None" if self.eps is None else log_band(self.eps, EPS_BANDS),
            "hidden n": band(self.n, HIDDEN_BANDS),
            "hidden edge": edge_class(self.n),
            "model hidden size": str(self.n in MODEL_HIDDEN),
            "rows": band(self.rows, ROW_BANDS),
            "rows edge": edge_class(self.rows),
            "distribution": self.distribution,
            "kappa": log_band(10.0**self.log10_kappa, KAPPA_BANDS),
            "dy law": self.grad_law,
        }
        if self.kind == "rms":
            del out["bias"]
        return out


# --- the data a case describes ------------------------------------------------------------


def expanded_axis(shape: tuple[int, ...], normalized_dims: int) -> int | None:
    """The axis an "expanded" (zero-stride) view repeats along: the first leading axis of size
    > 1 (whole rows repeat); None when there is none."""
    for axis in range(len(shape) - normalized_dims):
        if shape[axis] > 1:
            return axis
    return None


def valid_layouts(shape: tuple[int, ...], normalized_dims: int, layouts=LAYOUTS) -> tuple:
    """The layouts a tensor of ``shape`` can take: channels_last needs 4 dimensions, an
    expanded view a leading axis to repeat along, a strided view two elements (torch calls any
    one-element tensor contiguous, whatever its strides)."""
    out = []
    for layout in layouts:
        if layout == "channels_last" and len(shape) != 4:
            continue
        if layout == "strided" and math.prod(shape) < 2:
            continue
        if layout == "expanded" and expanded_axis(shape, normalized_dims) is None:
            continue
        out.append(layout)
    return tuple(out)


def drawn_shape(shape: tuple[int, ...], normalized_dims: int, layout: str) -> tuple[int, ...]:
    """The shape of the values drawn: size 1 along an expanded view's repeated axis."""
    axis = expanded_axis(shape, normalized_dims) if layout == "expanded" else None
    if axis is None:
        return shape
    return tuple(1 if i == axis else s for i, s in enumerate(shape))


def finite_limit(dtype: str) -> float:
    return FLOAT16_NEAR_MAX if dtype == "float16" else 0.5 * float(np.finfo(np.float32).max)


def row_law(
    rng, rows: int, n: int, *, distribution: str, log10_kappa: float, log10_scale: float
) -> np.ndarray:
    """(rows, n) values: per row a scale 10**(log10_scale +- 0.5) and a mean giving condition
    number 10**log10_kappa. The law's "constant" draws every other ROW constant (eps alone
    decides its output)."""
    # The laws of verify.strategies.common act on axis 1 ("channels"): draw (n, rows) so that
    # axis is the rows, and transpose.
    z = DISTRIBUTIONS[distribution](rng, (n, rows)).T
    scale = 10.0 ** (log10_scale + rng.uniform(-0.5, 0.5, size=rows))
    kappa = 10.0**log10_kappa
    spread = math.sqrt(max(kappa**2 - 1.0, 0.0))  # kappa = sqrt(1 + mean^2/var)
    if distribution == "constant":
        spread = max(spread, 1.0)  # a constant row of zeros would be too easy
    loc = scale * spread * rng.choice([-1.0, 1.0], size=rows)
    return loc[:, None] + scale[:, None] * z


def bounded(x: np.ndarray, *, distribution: str, dtype: str) -> np.ndarray:
    """``x`` scaled so that it is finite in ``dtype`` ("near_float16_max": its peak just under
    the float16 limit), then rounded to ``dtype``."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if distribution == "near_float16_max" and peak > 0:
        x = x / peak * FLOAT16_NEAR_MAX
    elif peak > finite_limit(dtype):
        # Inputs stay finite in their dtype: overflow on input is not the property under test.
        x = x / peak * finite_limit(dtype)
    return round_to(x, dtype)


def make_input(case: RowCase, *, step: int = 0) -> np.ndarray:
    """The float64 array the case describes, already rounded to ``case.dtype`` (so the float64
    reference sees exactly the values the target sees). An expanded input repeats whole rows."""
    rng = np.random.default_rng([case.seed, step])
    shape = drawn_shape(case.shape, case.normalized_dims, case.x_layout)
    rows = math.prod(shape[: len(shape) - case.normalized_dims])
    x = row_law(
        rng,
        rows,
        case.n,
        distribution=case.distribution,
        log10_kappa=case.log10_kappa,
        log10_scale=case.log10_scale,
    )
    x = bounded(x, distribution=case.distribution, dtype=case.dtype).reshape(shape)
    return np.broadcast_to(x, case.shape).copy()


def make_params(case: RowCase) -> tuple[np.ndarray | None, np.ndarray | None]:
    """weight and bias of shape normalized_shape, rounded to the parameters' dtype: random
    (weights of either sign) when elementwise_affine; None where the module has none."""
    if not case.affine:
        return None, None
    rng = np.random.default_rng([case.seed, 10_000])
    weight = round_to(rng.normal(1.0, 0.5, size=case.normalized_shape), case.param_dtype)
    bias = round_to(rng.normal(0.0, 0.5, size=case.normalized_shape), case.param_dtype)
    return weight, (bias if case.bias and case.kind == "layer" else None)


def make_grad(case: RowCase, *, step: int = 0, salt: int = 20_000) -> np.ndarray:
    """An incoming gradient: standard normal, rounded; repeated along the expanded axis if its
    layout is "expanded". ``salt`` tells apart several gradients of one case."""
    rng = np.random.default_rng([case.seed, salt, step])
    shape = drawn_shape(case.shape, case.normalized_dims, case.dy_layout)
    dy = rng.normal(size=shape)
    features = (1,) * (len(shape) - case.normalized_dims) + tuple(case.normalized_shape)
    if case.grad_law == "offset":  # a per-feature mean 1-100 times the spread
        dy = dy + 10.0 ** rng.uniform(0.0, 2.0, size=features) * rng.choice([-1.0, 1.0], features)
    elif case.grad_law == "sparse":
        dy = dy * (rng.uniform(size=shape) < rng.uniform(0.1, 0.5))
    elif case.grad_law == "output":
        corner = tuple(slice(0, s) for s in shape)  # the rows an expanded dy repeats
        dy = normalized(case, make_input(case, step=step))[corner] + 0.25 * dy
    return np.broadcast_to(round_to(dy, case.dtype), case.shape).copy()


def normalized(case: RowCase, x: np.ndarray) -> np.ndarray:
    """x normalised over the case's rows in float64: (x - mean) / std for layer norm, x / rms
    for RMSNorm (0 where a row has no spread)."""
    rows_ = x.reshape(-1, case.n)
    if case.kind == "layer":
        rows_ = rows_ - rows_.mean(axis=1, keepdims=True)
    scale = np.sqrt((rows_ * rows_).mean(axis=1, keepdims=True))
    return (rows_ / np.where(scale > 0, scale, 1.0)).reshape(x.shape)


# --- the search -----------------------------------------------------------------------------

#: Where the elements of a case go: one long row or a few, many short rows, or between.
EMPHASES = ("hidden", "rows", "balanced")


def split(draw, total: int, dims: int, *, low: int = 1) -> tuple[int, ...]:
    """``dims`` sizes whose product is at most ``total`` (the last takes what is left)."""
    if dims == 0:
        return ()
    out, left = [], max(total, 1)
    for _ in range(dims - 1):
        side = draw(st.integers(low, max(low, int(round(left ** (1 / dims))) * 2)))
        side = max(1, min(side, left))
        out.append(side)
        left = max(1, left // side)
    out.append(left)
    return tuple(out)


#: The edges of the tiles long rows are cut into (1k to 16k elements): 2^k - 1, 2^k, 2^k + 1.
TILE_EDGES = tuple(v for k in range(10, 15) for v in (2**k - 1, 2**k, 2**k + 1))


def hidden_sizes(cap: int, low: int = 1) -> st.SearchStrategy[int]:
    """A row length from ``low`` to ``cap``: any size (favouring every power of two's
    neighbours), the long rows' tile edges, real models' hidden sizes, and the longest row
    there is room for."""
    choices = [sizes(min_value=low, max_value=max(low, cap)), st.just(max(low, cap))]
    for group in (TILE_EDGES, MODEL_HIDDEN):
        fitting = [h for h in group if low <= h <= cap]
        if fitting:
            choices.append(st.sampled_from(fitting))
    return st.one_of(*choices)


def _hidden_between(lo: int, hi: int) -> st.SearchStrategy[int]:
    return hidden_sizes(hi, low=lo)


@st.composite
def row_shapes(draw, *, ranks: tuple[int, ...], max_elements: int):
    """(shape, normalized_dims): a rank in ``ranks``, one to three normalised dimensions (one
    most often), at most ``max_elements`` elements; one of hidden size and row count drawn
    large, the other to fit."""
    rank = draw(st.sampled_from(sorted(ranks)))
    k = draw(st.one_of(st.just(1), st.integers(1, min(3, rank))))
    # A pinned band of row lengths is drawn by the emphasis that draws it.
    emphasis = "hidden" if pin("hidden n") else draw(st.sampled_from(EMPHASES))
    budget = max(max_elements, 1)
    if emphasis == "hidden":
        cap = min(MAX_HIDDEN, budget)
        # Half by band (choose(): the gap rounds can pin the longest rows' band, past the tile
        # a kernel's statistics cover), half the sizes kernels are tried at.
        by_band = pin("hidden n") or draw(evenly(("sizes", "band"))) == "band"
        n = draw(
            chosen_band("hidden n", edges=HIDDEN_BANDS, max_value=cap, inside=_hidden_between)
            if by_band
            else hidden_sizes(cap)
        )
    elif emphasis == "rows":
        n = draw(sizes(min_value=1, max_value=min(64, budget)))
    else:
        n = draw(sizes(min_value=1, max_value=min(1024, budget)))
    rows = draw(sizes(min_value=1, max_value=max(1, min(MAX_ROWS, budget // n))))
    if emphasis == "rows":
        rows = max(rows, min(MAX_ROWS, budget // n))
    # normalized_shape: small factors of n first, the rest in the last dimension
    dims, rest = [], n
    for _ in range(k - 1):
        factors = [d for d in (2, 3, 4, 5, 7, 8) if rest % d == 0]
        d = draw(st.sampled_from(factors)) if factors else 1
        dims.append(d)
        rest //= d
    dims.append(rest)
    leading = split(draw, rows, rank - k)
    return (*leading, *dims), k


def epsilons(*, allow_none: bool) -> st.SearchStrategy[float | None]:
    """eps from 1e-12 to 1e-1, the usual values first, log-uniform between; and None (torch's
    default for RMSNorm) where the norm takes it."""
    usual = [1e-5, 1e-6, 1e-3, 1e-1, 1e-8, 1e-12] + ([None] if allow_none else [])
    return st.one_of(st.sampled_from(usual), st.floats(-12.0, -1.0).map(lambda e: float(10.0**e)))


def kappas(dtype: str) -> st.SearchStrategy[float]:
    """log10 of a condition number: 0 (mean 0, the common case) as often as anything up to
    the dtype's limit (1e4 in float32: past it the input's own rounding is the row's spread)."""
    return st.one_of(st.just(0.0), st.floats(0.0, DTYPE_KAPPA[dtype]))


def param_dtypes(target: Target) -> tuple[str, ...]:
    """The parameter dtypes a target's ordinary cases draw: float32 parameters (mixed
    precision, as torch keeps them under autocast) or the activations' own (``module.to(dtype)``).
    ``options["param_dtypes"]`` narrows that; the param_dtypes checks try every other pairing."""
    natural = tuple(dict.fromkeys(("float32", target.dtype)))
    if target.dtype == "float64":
        natural = ("float64",)
    return tuple(target.options.get("param_dtypes", natural))


@st.composite
def row_cases(draw, *, target: Target, kind: str, max_elements: int = 20_000) -> RowCase:
    """Cases reaching the known failure modes of row norms (large kappa, constant rows, tiny and
    huge scales, values near the float16 limit, heavy tails, outliers) across every dimension a
    kernel branches on, at most ``max_elements`` elements."""
    if kind not in ("layer", "rms"):
        raise ValueError(f"kind={kind!r}: use 'layer' (LayerNorm) or 'rms' (RMSNorm)")
    dtype = target.dtype
    if target.compile:
        shape = draw(st.sampled_from([s for s in COMPILED_SHAPES if len(s) in target.ranks]))
        k = 1
    else:
        # A channels_last variant draws the rank that layout exists in.
        ranks = (4,) if target.layouts == ("channels_last",) else target.ranks
        shape, k = draw(row_shapes(ranks=ranks, max_elements=max_elements))
    layouts = valid_layouts(shape, k, target.layouts or LAYOUTS) or ("contiguous",)
    lo, hi = DTYPE_SCALE[dtype]
    dist = draw(st.sampled_from(sorted(DISTRIBUTIONS)))
    if dist == "near_float16_max" and dtype not in ("float16", "float32"):
        dist = "normal"
    eps = draw(epsilons(allow_none=kind == "rms"))
    if target.compile:  # each eps is a constant of the compiled graph: a recompilation
        eps = draw(st.sampled_from([1e-5, None] if kind == "rms" else [1e-5]))
    return RowCase(
        shape=shape,
        normalized_dims=k,
        kind=kind,
        dtype=dtype,
        param_dtype=draw(st.sampled_from(param_dtypes(target))),
        distribution=dist,
        log10_kappa=draw(kappas(dtype)),
        log10_scale=draw(st.floats(lo, hi)),
        seed=draw(st.integers(0, 2**32 - 1)),
        eps=eps,
        affine=draw(st.booleans()),
        bias=kind == "layer" and draw(st.booleans()),
        x_layout=draw(st.sampled_from(layouts)),
        dy_layout="contiguous" if target.compile else draw(st.sampled_from(layouts_of(shape, k))),
        grad_law=draw(choose("dy law", GRAD_LAWS)),
    )


def layouts_of(shape: tuple[int, ...], k: int) -> tuple[str, ...]:
    return valid_layouts(shape, k) or ("contiguous",)


def with_param_dtype(case: RowCase, param_dtype: str) -> RowCase:
    return dataclasses.replace(case, param_dtype=param_dtype)


def dimensions(target: Target, *, kind: str, max_elements: int) -> dict[str, tuple[str, ...]]:
    """The values of each coverage dimension ``target`` can reach within ``max_elements``: the
    report flags the ones no case reached."""
    if target.compile:
        return {"dtype": (target.dtype,), "x layout": ("contiguous",)}
    x_layouts = tuple(v for v in (target.layouts or LAYOUTS) if v != "channels_last" or 4 in
                      target.ranks)  # fmt: skip
    eps = tuple(log_band(e, EPS_BANDS) for e in (1e-11, 1e-8, 1e-5, 1e-2))
    hidden_cap = min(MAX_HIDDEN, max_elements)
    return {
        "dtype": (target.dtype,),
        "param dtype": param_dtypes(target),
        "rank": tuple(f"{r}-D" for r in sorted(target.ranks)),
        "normalized dims": ("1", "2", "3") if max(target.ranks) >= 3 else ("1", "2"),
        "x layout": x_layouts,
        "dy layout": tuple(v for v in LAYOUTS if v != "channels_last" or 4 in target.ranks),
        "elementwise_affine": ("True", "False"),
        **({"bias": ("True", "False")} if kind == "layer" else {}),
        "eps": eps + (("None",) if kind == "rms" else ()),
        "hidden n": reachable_bands(hidden_cap, HIDDEN_BANDS),
        "hidden edge": EDGES,
        "model hidden size": ("True", "False") if hidden_cap >= MODEL_HIDDEN[0] else ("False",),
        "rows": reachable_bands(min(MAX_ROWS, max_elements), ROW_BANDS),
        "rows edge": EDGES,
        "dy law": GRAD_LAWS,
        "kappa": tuple(
            dict.fromkeys(
                log_band(k, KAPPA_BANDS)
                for k in (1.0, 5.0, 50.0, 500.0, 5000.0)
                if k <= 10.0 ** DTYPE_KAPPA[target.dtype]
            )
        ),
    }


__all__ = [
    "COMPILED_SHAPES",
    "GRAD_LAWS",
    "MAX_HIDDEN",
    "MODEL_HIDDEN",
    "PARAM_DTYPES",
    "ROW_RANKS",
    "TILE_EDGES",
    "RowCase",
    "dimensions",
    "drawn_shape",
    "epsilons",
    "expanded_axis",
    "fit",
    "hidden_sizes",
    "kappas",
    "make_grad",
    "make_input",
    "make_params",
    "normalized",
    "param_dtypes",
    "row_cases",
    "row_law",
    "row_shapes",
    "valid_layouts",
]


def fit(case: RowCase, target: Target) -> RowCase:
    """A fixed (known) case as ``target`` can take it: its dtype, a parameter dtype its cases
    draw, an input layout it takes (a channels_last variant gets a 4-D input), a compiled
    shape for a compiled target, and a value law its dtype holds."""
    changes: dict = {"dtype": target.dtype}
    if case.param_dtype not in param_dtypes(target):
        changes["param_dtype"] = param_dtypes(target)[0]
    shape, k = case.shape, case.normalized_dims
    layout = case.x_layout
    if target.compile:
        shape, k, layout = COMPILED_SHAPES[0], 1, "contiguous"
        changes.update(dy_layout="contiguous", eps=1e-5)
    elif target.layouts and layout not in target.layouts:
        layout = target.layouts[0]
        if layout == "channels_last":  # (1, rows, 1, n): channels_last is a real permutation
            shape, k = (1, math.prod(shape[: len(shape) - k]), 1, math.prod(shape[-k:])), 1
    if layout not in valid_layouts(shape, k):
        layout = "contiguous"
    changes.update(shape=shape, normalized_dims=k, x_layout=layout)
    if case.dy_layout not in valid_layouts(shape, k):
        changes["dy_layout"] = "contiguous"
    if case.distribution == "near_float16_max" and target.dtype not in ("float16", "float32"):
        changes["distribution"] = "normal"
    changes["log10_kappa"] = min(case.log10_kappa, DTYPE_KAPPA[target.dtype])
    if case.eps is None and case.kind == "layer":
        changes["eps"] = 1e-5
    return dataclasses.replace(case, **changes)

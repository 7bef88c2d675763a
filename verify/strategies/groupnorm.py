"""GroupNorm cases: a small, printable description Hypothesis draws and shrinks, and the data.

Group norm (Wu & He 2018) normalises each of a sample's G groups of C/G consecutive channels over
all its spatial positions. A :class:`GNCase` holds every dimension a group-norm kernel branches on:
rank (2-D to 5-D), batch N, the number of groups and the group size C/G (powers of two and not:
48 channels in 16 groups is a group of 3), the spatial extent (H*W a multiple of a tile or not),
the layout of the input and of the incoming gradient (channels_last for 4-D and 5-D input),
the activations' and the parameters' dtypes, affine, eps, and the law of each group's values
(distribution, kappa, scale, seed). :func:`dimensions` lists what a target can reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from verify.dimensions import LAYOUTS
from verify.strategies.common import (
    DISTRIBUTIONS,
    band,
    divisors,
    edge_class,
    evenly,
    log_band,
    reachable_bands,
    round_to,
    sizes,
)
from verify.strategies.pins import choose, chosen_band, pin
from verify.strategies.rows import (
    DTYPE_KAPPA,
    DTYPE_SCALE,
    EDGES,
    EPS_BANDS,
    KAPPA_BANDS,
    bounded,
    epsilons,
    kappas,
    param_dtypes,
    row_law,
)
from verify.targets.base import Target

#: The input ranks of group norm's cases: (N, C), (N, C, L), (N, C, H, W), (N, C, D, H, W).
GN_RANKS = (2, 3, 4, 5)
#: The largest group count and group size drawn (32 groups is the paper's default).
MAX_GROUPS, MAX_GROUP_SIZE = 64, 64
#: Compiled targets see these shapes and group counts only (each new shape recompiles).
COMPILED_CASES = (((4, 6, 5, 5), 3), ((2, 32, 4, 4), 8))

GROUP_BANDS = (1, 8, 32)
GROUP_SIZE_BANDS = (1, 2, 16)
SPATIAL_BANDS = (1, 64, 1024, 16384)
GROUP_N_BANDS = (1, 256, 2048, 65504)  # values per group: exact in bf16 up to 256, ...


@dataclass(frozen=True)
class GNCase:
    shape: tuple[int, ...]  # (N, C, *spatial)
    num_groups: int = 1
    dtype: str = "float32"
    param_dtype: str = "float32"
    distribution: str = "normal"
    log10_kappa: float = 0.0  # per-group |mean|/std ~ 10**log10_kappa
    log10_scale: float = 0.0
    seed: int = 0
    eps: float = 1e-5
    affine: bool = True
    x_layout: str = "contiguous"
    dy_layout: str = "contiguous"

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def group_size(self) -> int:
        """Channels per group, C/G."""
        return self.channels // self.num_groups

    @property
    def spatial(self) -> int:
        return math.prod(self.shape[2:])

    @property
    def n(self) -> int:
        """Values per group: (C/G) times the spatial size."""
        return self.group_size * self.spatial

    def coverage(self) -> dict[str, str | tuple[str, ...]]:
        gs = self.group_size
        return {
            "dtype": self.dtype,
            "param dtype": self.param_dtype,
            "rank": f"{len(self.shape)}-D",
            "x layout": self.x_layout,
            "dy layout": self.dy_layout,
            "affine": str(self.affine),
            "eps": log_band(self.eps, EPS_BANDS),
            "groups G": band(self.num_groups, GROUP_BANDS),
            "group size C/G": band(gs, GROUP_SIZE_BANDS),
            "group size edge": edge_class(gs),
            "spatial size": band(self.spatial, SPATIAL_BANDS),
            "spatial multiple of 32": str(self.spatial % 32 == 0),
            "values per group": band(self.n, GROUP_N_BANDS),
            "batch N edge": edge_class(self.shape[0]),
            "distribution": self.distribution,
            "kappa": log_band(10.0**self.log10_kappa, KAPPA_BANDS),
        }


# --- the data a case describes ------------------------------------------------------------


def expanded_axis(shape: tuple[int, ...]) -> int | None:
    """The axis an expanded (zero-stride) view repeats along: the batch axis, else a spatial
    one (whole samples, or whole planes, repeat); None when every such axis has size 1."""
    for axis in (0, *range(2, len(shape))):
        if shape[axis] > 1:
            return axis
    return None


def valid_layouts(shape: tuple[int, ...], layouts=LAYOUTS) -> tuple[str, ...]:
    out = []
    for layout in layouts:
        if layout == "channels_last" and len(shape) not in (4, 5):
            continue
        if layout == "expanded" and expanded_axis(shape) is None:
            continue
        out.append(layout)
    return tuple(out)


def _drawn_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    axis = expanded_axis(shape) if layout == "expanded" else None
    if axis is None:
        return shape
    return tuple(1 if i == axis else s for i, s in enumerate(shape))


def make_input(case: GNCase, *, step: int = 0) -> np.ndarray:
    """The float64 array the case describes, rounded to ``case.dtype``: each (sample, group)
    drawn as one row of the row law (verify.strategies.rows.row_law)."""
    rng = np.random.default_rng([case.seed, step])
    shape = _drawn_shape(case.shape, case.x_layout)
    n_samples, c = shape[0], shape[1]
    g = case.num_groups
    spatial = math.prod(shape[2:])
    x = row_law(
        rng,
        n_samples * g,
        (c // g) * spatial,
        distribution=case.distribution,
        log10_kappa=case.log10_kappa,
        log10_scale=case.log10_scale,
    )
    x = bounded(x, distribution=case.distribution, dtype=case.dtype).reshape(shape)
    return np.broadcast_to(x, case.shape).copy()


def make_params(case: GNCase) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-channel weight (either sign) and bias in the parameters' dtype; None without affine."""
    if not case.affine:
        return None, None
    rng = np.random.default_rng([case.seed, 10_000])
    weight = round_to(rng.normal(1.0, 0.5, size=case.channels), case.param_dtype)
    bias = round_to(rng.normal(0.0, 0.5, size=case.channels), case.param_dtype)
    return weight, bias


def make_grad(case: GNCase, *, step: int = 0) -> np.ndarray:
    rng = np.random.default_rng([case.seed, 20_000, step])
    shape = _drawn_shape(case.shape, case.dy_layout)
    return np.broadcast_to(round_to(rng.normal(size=shape), case.dtype), case.shape).copy()


# --- the search -----------------------------------------------------------------------------


@st.composite
def gn_shapes(draw, *, ranks: tuple[int, ...], max_elements: int):
    """((N, C, *spatial), G): G groups of C/G channels, at most ``max_elements`` elements."""
    rank = draw(choose("rank", {f"{r}-D": r for r in sorted(ranks)}))
    budget = max(max_elements, 2)
    # Half the cases (and every one that pins it) draw the values per group first, by band:
    # the reduction length a kernel tiles, and where bfloat16 and float16 stop summing exactly.
    if rank > 2 and (
        pin("values per group") or draw(evenly(("sizes", "values per group"))) != "sizes"
    ):
        return draw(_shapes_by_values_per_group(rank=rank, budget=budget))
    g = draw(st.one_of(st.sampled_from([1, 2, 8, 16, 32]), sizes(max_value=MAX_GROUPS)))
    g = min(g, budget)
    gs = draw(st.one_of(st.sampled_from([1, 2, 3, 4, 6, 16]), sizes(max_value=MAX_GROUP_SIZE)))
    gs = max(1, min(gs, budget // g))
    c = g * gs
    left = max(1, budget // c)
    if rank == 2:
        # One value per group in a batch of one is refused by torch (as batch norm's one value
        # per channel in training): the bad-input check's business, not this one's.
        n = draw(sizes(min_value=1 if gs > 1 else 2, max_value=max(2, min(left, 4097))))
        return (n, c), g
    spatial_size = draw(sizes(min_value=1, max_value=max(1, left // 2)))
    n = draw(sizes(min_value=1, max_value=max(1, min(8, left // spatial_size))))
    dims = rank - 2
    spatial, rest = [], spatial_size
    for _ in range(dims - 1):
        side = draw(st.integers(1, max(1, int(round(rest ** (1 / dims))) * 2)))
        side = max(1, min(side, rest))
        spatial.append(side)
        rest = max(1, rest // side)
    spatial.append(rest)
    if n * gs * math.prod(spatial) < 2:  # a group of one value in a batch of one: torch refuses
        n = 2
    return (n, c, *spatial), g


@st.composite
def _shapes_by_values_per_group(draw, *, rank: int, budget: int):
    """((N, C, *spatial), G) with exactly the values per group drawn (C/G and the spatial sizes
    are divisors of it: a band's edge, 2^k + 1 say, stays that size), at most ``budget``
    elements."""
    per_group = draw(chosen_band("values per group", edges=GROUP_N_BANDS, max_value=budget // 2))
    gs = draw(st.sampled_from([d for d in divisors(per_group) if d <= MAX_GROUP_SIZE]))
    sides, rest = [], per_group // gs
    for _ in range(rank - 3):
        side = draw(st.sampled_from(divisors(rest)))
        sides.append(side)
        rest //= side
    g = draw(sizes(max_value=max(1, min(MAX_GROUPS, budget // per_group))))
    n = draw(sizes(max_value=max(1, min(8, budget // (g * per_group)))))
    if n * per_group < 2:  # a group of one value in a batch of one: torch refuses
        n = 2
    return (n, g * gs, *sides, rest), g


@st.composite
def gn_cases(draw, *, target: Target, max_elements: int = 20_000) -> GNCase:
    dtype = target.dtype
    if target.compile:
        shape, g = draw(st.sampled_from(COMPILED_CASES))
    else:
        # A channels_last variant, or a pinned channels_last layout, draws the ranks that
        # layout exists in.
        ranks = target.ranks
        if target.layouts == ("channels_last",) or "channels_last" in (
            pin("x layout"),
            pin("dy layout"),
        ):
            ranks = tuple(r for r in ranks if r in (4, 5)) or (4,)
        shape, g = draw(gn_shapes(ranks=ranks, max_elements=max_elements))
    x_choices = valid_layouts(shape, target.layouts or LAYOUTS) or ("contiguous",)
    lo, hi = DTYPE_SCALE[dtype]
    dist = draw(st.sampled_from(sorted(DISTRIBUTIONS)))
    if dist == "near_float16_max" and dtype not in ("float16", "float32"):
        dist = "normal"
    eps = draw(epsilons(allow_none=False)) if not target.compile else 1e-5
    return GNCase(
        shape=shape,
        num_groups=g,
        dtype=dtype,
        param_dtype=draw(st.sampled_from(param_dtypes(target))),
        distribution=dist,
        log10_kappa=draw(kappas(dtype)),
        log10_scale=draw(st.floats(lo, hi)),
        seed=draw(st.integers(0, 2**32 - 1)),
        eps=eps,
        affine=draw(choose("affine", {"True": True, "False": False})),
        x_layout=draw(choose("x layout", x_choices)),
        dy_layout=(
            "contiguous" if target.compile else draw(choose("dy layout", valid_layouts(shape)))
        ),
    )


def dimensions(target: Target, *, max_elements: int) -> dict[str, tuple[str, ...]]:
    """The values of each coverage dimension ``target`` can reach within ``max_elements``."""
    if target.compile:
        return {"dtype": (target.dtype,), "x layout": ("contiguous",)}
    ranks = sorted(target.ranks)
    four = max(ranks) >= 4
    x_layouts = tuple(v for v in (target.layouts or LAYOUTS) if v != "channels_last" or four)
    return {
        "dtype": (target.dtype,),
        "param dtype": param_dtypes(target),
        "rank": tuple(f"{r}-D" for r in ranks),
        "x layout": x_layouts,
        "dy layout": tuple(v for v in LAYOUTS if v != "channels_last" or four),
        "affine": ("True", "False"),
        "eps": tuple(log_band(e, EPS_BANDS) for e in (1e-11, 1e-8, 1e-5, 1e-2)),
        "groups G": reachable_bands(min(MAX_GROUPS, max_elements), GROUP_BANDS),
        "group size C/G": reachable_bands(MAX_GROUP_SIZE, GROUP_SIZE_BANDS),
        "group size edge": EDGES,
        "spatial multiple of 32": ("True", "False") if max(ranks) > 2 else ("False",),
        "values per group": reachable_bands(max_elements // 2, GROUP_N_BANDS),
        "batch N edge": EDGES,
        "kappa": tuple(
            dict.fromkeys(
                log_band(k, KAPPA_BANDS)
                for k in (1.0, 5.0, 50.0, 500.0, 5000.0)
                if k <= 10.0 ** DTYPE_KAPPA[target.dtype]
            )
        ),
    }


__all__ = [
    "COMPILED_CASES",
    "GN_RANKS",
    "GNCase",
    "dimensions",
    "expanded_axis",
    "gn_cases",
    "gn_shapes",
    "make_grad",
    "make_input",
    "make_params",
    "valid_layouts",
]

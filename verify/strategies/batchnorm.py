"""Batch-norm cases: a small, printable description Hypothesis draws and shrinks, and the data.

A case holds every dimension a batch-norm kernel can branch on (verify/targets/variants.py and
DESIGN.md, "The configuration space"): the rank and each size (batch, channels, spatial extent,
across 2^k - 1, 2^k, 2^k + 1 and out to the profile's element budget), the layout of the input
and of the incoming gradient separately (contiguous, channels_last, strided, expanded, a storage
offset), every constructor argument (affine, track_running_stats, momentum None, 0, 1 and between,
eps from 1e-12 to 1e-1), the sequence of modes a module goes through, and the *law* of the
values (distribution, condition number kappa, scale, seed). ``make_input`` turns it into the
array. Keeping the data out of the case keeps counterexamples short enough to paste into a
reproduction script, and lets Hypothesis shrink towards simple laws rather than single floats.

:meth:`BNCase.coverage` names the configuration a case is in, and :func:`dimensions` the values
a target can reach under a profile: the report's coverage table.
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
    banded_sizes,
    edge_class,
    evenly,
    log_band,
    nearest_divisor,
    reachable_bands,
    round_to,
    sizes,
)
from verify.strategies.pins import choose, chosen_band, pin
from verify.targets.base import Target

#: Largest finite float16 is 65504: "near the float16 limit" draws magnitudes up to this.
FLOAT16_NEAR_MAX = 6.0e4

#: Program steps of the mode-switching check: forward in training or eval mode, with or without
#: a backward pass (a frozen batch norm is trained through in eval mode when fine-tuning).
STEPS = ("train", "train+backward", "eval", "eval+backward")

#: Bands of the coverage table. Sizes: magnitude, and where they sit against a power of two.
N_BANDS = (1, 16, 256, 4096)
C_BANDS = (1, 16, 256, 4096)
S_BANDS = (1, 256, 4096, 65536)
#: Reduction lengths: exact in bfloat16 up to 256, counted exactly in float16 up to 2048, summed
#: past float16's largest value beyond 65504.
M_BANDS = (2, 256, 2048, 65504)
EPS_BANDS = (1e-12, 1e-9, 1e-6, 1e-3, 1e-1)
EDGES = ("1", "2^k-1", "2^k", "2^k+1", "other")
KAPPA_BANDS = (1.0, 10.0, 1e2, 1e3)


@dataclass(frozen=True)
class BNCase:
    shape: tuple[int, ...]  # (N, C, *spatial): 2-D to 5-D
    dtype: str = "float32"
    distribution: str = "normal"
    log10_kappa: float = 0.0  # per-channel |mean|/std ~ 10**log10_kappa (kappa = 1: mean 0)
    log10_scale: float = 0.0  # per-channel std ~ 10**log10_scale
    seed: int = 0
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    x_layout: str = "contiguous"  # verify.targets.variants.LAYOUTS
    dy_layout: str = "contiguous"
    grad_law: str = "normal"  # GRAD_LAWS: the incoming gradient's values
    steps: int = 1  # training steps, for the running-statistics check
    program: tuple[str, ...] = ()  # STEPS in order, for the mode-switching check

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def m(self) -> int:
        """Values per channel: N times the spatial size."""
        return self.shape[0] * math.prod(self.shape[2:])

    @property
    def spatial(self) -> int:
        return math.prod(self.shape[2:])

    def coverage(self) -> dict[str, str | tuple[str, ...]]:
        """The configuration this case is in, as the coverage table's dimensions and values."""
        n, c, s = self.shape[0], self.channels, self.spatial
        out = {
            "dtype": self.dtype,
            "rank": f"{len(self.shape)}-D",
            "x layout": self.x_layout,
            "dy layout": self.dy_layout,
            "layout pair": layout_pair(self.x_layout, self.dy_layout),
            "dy law": self.grad_law,
            "affine": str(self.affine),
            "track_running_stats": str(self.track_running_stats),
            "momentum": momentum_label(self.momentum),
            "eps": log_band(self.eps, EPS_BANDS),
            "batch N": band(n, N_BANDS),
            "batch N edge": edge_class(n),
            "channels C": band(c, C_BANDS),
            "channels C edge": edge_class(c),
            "spatial size": band(s, S_BANDS),
            "spatial edge": edge_class(s),
            "reduction m": band(self.m, M_BANDS),
            "distribution": self.distribution,
            "kappa": log_band(10.0**self.log10_kappa, KAPPA_BANDS),
        }
        if self.program:
            out.update(program_coverage(self.program))
        return out


def momentum_label(momentum: float | None) -> str:
    if momentum is None:
        return "None (cumulative)"
    if momentum in (0.0, 1.0):
        return f"{momentum:g}"
    return "(0, 1)"


def program_coverage(program: tuple[str, ...]) -> dict[str, str | tuple[str, ...]]:
    modes = [s.split("+")[0] for s in program]
    switches = sum(a != b for a, b in zip(modes, modes[1:], strict=False))
    run = longest_training_run(program)
    return {
        "mode": tuple(sorted(set(program))),
        "mode switches": band(switches, (0, 1, 3)),
        "training steps before an eval": band(run, (1, 9)),
        "eval backward": str("eval+backward" in program),
    }


def longest_training_run(program: tuple[str, ...]) -> int:
    longest = current = 0
    for step in program:
        current = current + 1 if step.startswith("train") else 0
        longest = max(longest, current)
    return longest


# --- the data a case describes ------------------------------------------------------------


def expanded_axis(shape: tuple[int, ...]) -> int | None:
    """The axis an "expanded" (zero-stride) view repeats along: the first non-channel axis of
    size > 1, else the channel axis; None when every axis has size 1."""
    for axis in (0, *range(2, len(shape)), 1):
        if shape[axis] > 1:
            return axis
    return None


def valid_layouts(shape: tuple[int, ...], layouts=LAYOUTS) -> tuple[str, ...]:
    """The layouts a tensor of ``shape`` can take: channels_last needs 4 or 5 dimensions, an
    expanded view an axis to repeat along."""
    out = []
    for layout in layouts:
        if layout == "channels_last" and len(shape) not in (4, 5):
            continue
        if layout == "expanded" and expanded_axis(shape) is None:
            continue
        out.append(layout)
    return tuple(out)


def _law(case: BNCase, rng, shape) -> np.ndarray:
    n, c = shape[0], shape[1]
    z = DISTRIBUTIONS[case.distribution](rng, shape)
    scale = 10.0 ** (case.log10_scale + rng.uniform(-0.5, 0.5, size=c))
    kappa = 10.0**case.log10_kappa
    # kappa = sqrt(1 + mean^2/var)  =>  |mean| = std * sqrt(kappa^2 - 1)
    spread = math.sqrt(max(kappa**2 - 1.0, 0.0))
    if case.distribution == "constant":
        spread = max(spread, 1.0)  # a constant channel of zeros would be too easy
    loc = scale * spread * rng.choice([-1.0, 1.0], size=c)
    bshape = (1, c) + (1,) * (len(shape) - 2)
    x = loc.reshape(bshape) + scale.reshape(bshape) * z
    del n
    return x


def make_input(case: BNCase, *, step: int = 0) -> np.ndarray:
    """The float64 array the case describes, already rounded to ``case.dtype``.

    Rounding first means the float64 reference sees exactly the values the target sees, so only
    the target's arithmetic is measured. An expanded input repeats along its zero-stride axis.
    """
    rng = np.random.default_rng([case.seed, step])
    shape = _drawn_shape(case.shape, case.x_layout)
    x = _law(case, rng, shape)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if case.distribution == "near_float16_max" and peak > 0:
        # Peak magnitude just under the float16 limit, whatever the scale drawn.
        x = x / peak * FLOAT16_NEAR_MAX
    elif peak > finite_limit(case.dtype):
        # Inputs stay finite in their dtype: overflow on input is not the property under test.
        x = x / peak * finite_limit(case.dtype)
    return np.broadcast_to(round_to(x, case.dtype), case.shape).copy()


def _drawn_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """The shape of the values drawn: size 1 along an expanded view's repeated axis."""
    axis = expanded_axis(shape) if layout == "expanded" else None
    if axis is None:
        return shape
    return tuple(1 if i == axis else s for i, s in enumerate(shape))


def finite_limit(dtype: str) -> float:
    return FLOAT16_NEAR_MAX if dtype == "float16" else 0.5 * float(np.finfo(np.float32).max)


def make_affine(case: BNCase) -> tuple[np.ndarray, np.ndarray]:
    """gamma and beta: random (gamma of either sign) when affine, else the identity."""
    if not case.affine:
        return np.ones(case.channels), np.zeros(case.channels)
    rng = np.random.default_rng([case.seed, 10_000])
    gamma = rng.normal(1.0, 0.5, size=case.channels)
    beta = rng.normal(0.0, 0.5, size=case.channels)
    return round_to(gamma, "float32"), round_to(beta, "float32")


def make_grad(case: BNCase, *, step: int = 0) -> np.ndarray:
    """The incoming gradient in the case's law (GRAD_LAWS), rounded; repeated along its axis
    if expanded."""
    rng = np.random.default_rng([case.seed, 20_000, step])
    shape = _drawn_shape(case.shape, case.dy_layout)
    dy = rng.normal(size=shape)
    bshape = (1, shape[1]) + (1,) * (len(shape) - 2)
    if case.grad_law == "offset":
        # A per-channel mean 1-100 times the spread (a loss through a bias or a mean): dx
        # subtracts it again, so a sum of dy accumulated coarsely shows.
        dy = dy + 10.0 ** rng.uniform(0.0, 2.0, size=bshape) * rng.choice([-1.0, 1.0], bshape)
    elif case.grad_law == "sparse":
        dy = dy * (rng.uniform(size=shape) < rng.uniform(0.1, 0.5))  # behind a ReLU: mostly 0
    elif case.grad_law == "output":
        # dy ~ x_hat (a loss like |y|^2 / 2): dgamma = sum dy x_hat grows with the batch, where
        # a coarse accumulation of it stalls. An expanded dy repeats the corner it was drawn in.
        corner = tuple(slice(0, s) for s in shape)
        dy = normalized(make_input(case, step=step))[corner] + 0.25 * dy
    return np.broadcast_to(round_to(dy, case.dtype), case.shape).copy()


def normalized(x: np.ndarray) -> np.ndarray:
    """x normalised per channel (axis 1) over every other axis in float64 (0 without spread)."""
    axes = tuple(i for i in range(x.ndim) if i != 1)
    centred = x - x.mean(axis=axes, keepdims=True)
    std = np.sqrt((centred * centred).mean(axis=axes, keepdims=True))
    return centred / np.where(std > 0, std, 1.0)


#: The two values of a boolean constructor argument, by coverage label.
BOOLS = {"True": True, "False": False}
#: The incoming gradient's laws: zero-mean normal, offset per channel, mostly zeros, and the
#: output's own direction (dy ~ x_hat).
GRAD_LAWS = ("normal", "offset", "sparse", "output")


# --- the search -----------------------------------------------------------------------------

DTYPE_KAPPA = {"float32": 4.0, "float64": 6.0, "bfloat16": 1.0, "float16": 2.0}
DTYPE_SCALE = {
    "float32": (-6.0, 6.0),
    "float64": (-6.0, 6.0),
    "bfloat16": (-6.0, 6.0),
    "float16": (-2.0, 2.0),
}
#: Where the elements of a case go: a big batch comes with few channels, and so on;
#: "reduction" draws the values per channel first, by band (M_BANDS: where a low-precision
#: type stops counting or summing exactly, where reduction tiles end), whatever mix of batch
#: and spatial size makes them up.
EMPHASES = ("balanced", "batch", "channels", "spatial", "reduction")
#: The largest batch and channel counts drawn ("several thousand"), whatever the budget.
MAX_BATCH, MAX_CHANNELS = 8193, 8193


@st.composite
def shapes(draw, *, ranks: tuple[int, ...], max_elements: int, min_m: int = 2):
    """(N, C, *spatial) of a rank in ``ranks``, at most ``max_elements`` elements, at least
    ``min_m`` values per channel; one dimension is drawn large, the others to fit."""
    rank = draw(choose("rank", {f"{r}-D": r for r in sorted(ranks)}))
    # Drawn evenly (st.sampled_from would favour the first early in a short run); a pinned
    # reduction band is drawn by the emphasis that draws it.
    emphases = EMPHASES if rank > 2 else ("balanced", "batch", "channels", "reduction")
    emphasis = "reduction" if pin("reduction m") else draw(evenly(emphases))
    budget = max(max_elements, min_m)

    def size(cap: int, low: int = 1) -> int:
        return draw(sizes(min_value=low, max_value=max(low, cap)))

    def wide(cap: int, edges: tuple) -> int:
        return draw(banded_sizes(max_value=max(1, cap), edges=edges))

    if emphasis == "batch":
        c = size(8)
        s = size(4) if rank > 2 else 1
        n = wide(min(MAX_BATCH, budget // (c * s)), N_BANDS)
    elif emphasis == "channels":
        n = size(4, low=1)
        s = size(4) if rank > 2 else 1
        c = wide(min(MAX_CHANNELS, budget // (n * s)), C_BANDS)
    elif emphasis == "spatial":
        n, c = size(2), size(3)
        s = wide(budget // (n * c), S_BANDS)
    elif emphasis == "reduction":
        # Exactly m values a channel (N and the spatial sizes divisors of it): a band's edge,
        # 2^k + 1 say, stays that size.
        m = draw(chosen_band("reduction m", edges=M_BANDS, max_value=budget, min_value=min_m))
        c = size(max(1, budget // m))
        if rank == 2:
            return (m, c)
        n = nearest_divisor(m, size(min(m, MAX_BATCH)))
        sides, left = [], m // n
        for k in range(rank - 2, 1, -1):  # as split_spatial draws them, then the divisor nearest
            near = draw(st.integers(1, max(1, int(round(left ** (1 / k))) * 2)))
            sides.append(nearest_divisor(left, near))
            left //= sides[-1]
        return (n, c, *sides, left)
    else:
        c = size(min(64, budget // min_m))
        n = size(min(64, max(1, budget // c)))
        s = size(max(1, budget // (n * c))) if rank > 2 else 1
    if n * s < min_m:  # one value per channel is the bad-input check's business, not this one's
        n = min_m
    return (n, c, *split_spatial(draw, s, rank - 2))


def split_spatial(draw, s: int, dims: int) -> tuple[int, ...]:
    """``dims`` spatial sizes whose product is at most ``s`` (the last one takes what is left)."""
    if dims == 0:
        return ()
    out = []
    left = s
    for _ in range(dims - 1):
        side = draw(st.integers(1, max(1, int(round(left ** (1 / dims))) * 2)))
        side = min(side, left)
        out.append(side)
        left = max(1, left // side)
    out.append(left)
    return tuple(out)


def momenta() -> st.SearchStrategy[float | None]:
    """The three special values (None: a cumulative average; 0: frozen; 1: the batch's) and
    the values between (torch's default 0.1 or any), evenly by coverage label."""
    return choose(
        "momentum",
        {
            "(0, 1)": st.one_of(
                st.just(0.1), st.floats(0.0, 1.0, exclude_min=True, exclude_max=True)
            ),
            "None (cumulative)": None,
            "0": 0.0,
            "1": 1.0,
        },
    )


def epsilons() -> st.SearchStrategy[float]:
    """eps from 1e-12 to 1e-1, the usual values first: log-uniform between."""
    return st.one_of(
        st.sampled_from([1e-5, 1e-3, 1e-1, 1e-8, 1e-12, 1e-10]),
        st.floats(-12.0, -1.0).map(lambda e: float(10.0**e)),
    )


def programs(*, max_steps: int) -> st.SearchStrategy[tuple[str, ...]]:
    """Sequences of training and eval steps, with and without backward: switches between modes,
    and long runs of training before an evaluation."""
    return st.one_of(
        st.lists(st.sampled_from(STEPS), min_size=2, max_size=max_steps).map(tuple),
        st.integers(2, max_steps - 1).map(lambda k: ("train+backward",) * k + ("eval",)),
        st.integers(1, max(1, max_steps // 2)).map(
            lambda k: ("train", "eval", "eval+backward") * k
        ),
    )


def fixed_argument(target: Target, name: str):
    """The value ``target`` fixes a constructor argument to, or None: a target may fix one it has
    no meaning without (conv-BN folding needs running statistics), with
    options={"fixed": {"track_running_stats": True}}. Its cases and its declared coverage both
    read it here."""
    return target.options.get("fixed", {}).get(name)


@st.composite
def bn_cases(
    draw,
    *,
    target: Target,
    max_elements: int = 20_000,
    min_m: int = 2,
    steps: int = 1,
    max_program: int = 0,
    vary_momentum: bool = True,
) -> BNCase:
    """Cases reaching the known failure modes (large kappa, constant channels, tiny and huge
    scales, values near the float16 limit, heavy tails, outliers) across every dimension a
    kernel branches on. ``max_elements`` caps the elements of one batch (the profile's budget,
    shared by the steps of a multi-step case)."""
    dtype = target.dtype
    per_step = max(max_elements // max(steps, max_program, 1), min_m)
    shape = draw(shapes(ranks=_ranks_for_pins(target.ranks), max_elements=per_step, min_m=min_m))
    x_choices = valid_layouts(shape, target.layouts or LAYOUTS) or ("contiguous",)
    lo, hi = DTYPE_SCALE[dtype]
    dist = draw(choose("distribution", sorted(DISTRIBUTIONS)))
    if dist == "near_float16_max" and dtype not in ("float16", "float32"):
        dist = "normal"
    x_layout, dy_layout = draw(_layout_pair(shape, x_choices))
    program = draw(programs(max_steps=max_program)) if max_program else ()
    track = draw(choose("track_running_stats", BOOLS)) if max_program or min_m == 1 else True
    fixed_track = fixed_argument(target, "track_running_stats")
    track = track if fixed_track is None else fixed_track
    if not track and math.prod(shape) // shape[1] < 2:
        track = True  # without running statistics, eval mode needs a batch's: two values at least
    return BNCase(
        shape=shape,
        dtype=dtype,
        distribution=dist,
        log10_kappa=draw(st.floats(0.0, DTYPE_KAPPA[dtype])),
        log10_scale=draw(st.floats(lo, hi)),
        seed=draw(st.integers(0, 2**32 - 1)),
        eps=draw(epsilons()),
        momentum=draw(momenta()) if vary_momentum else 0.1,
        affine=draw(choose("affine", BOOLS)),
        track_running_stats=track,
        x_layout=x_layout,
        dy_layout=dy_layout,
        grad_law=draw(choose("dy law", GRAD_LAWS)),
        steps=steps,
        program=program,
    )


#: How the incoming gradient's layout relates to the input's. A network usually keeps one
#: layout (same); the mixed channels_last pairs are where kernels chose their path from one
#: tensor's layout alone (pytorch/pytorch#64039); "other mixed" is any other pair of layouts.
LAYOUT_PAIRS = (
    "same",
    "x channels_last, dy contiguous",
    "x contiguous, dy channels_last",
    "other mixed",
)
_CL_PAIRS = {
    LAYOUT_PAIRS[1]: ("channels_last", "contiguous"),
    LAYOUT_PAIRS[2]: ("contiguous", "channels_last"),
}


def layout_pair(x_layout: str, dy_layout: str) -> str:
    """The "layout pair" coverage value of an input and gradient layout."""
    if x_layout == dy_layout:
        return "same"
    return next((k for k, v in _CL_PAIRS.items() if v == (x_layout, dy_layout)), "other mixed")


def _ranks_for_pins(ranks: tuple[int, ...]) -> tuple[int, ...]:
    """The ranks a case may take under the current pins: a pinned channels_last layout (of the
    input, the gradient or a mixed pair) needs a 4-D or 5-D tensor."""
    wants_cl = pin("layout pair") in _CL_PAIRS or "channels_last" in (
        pin("x layout"),
        pin("dy layout"),
    )
    return tuple(r for r in ranks if r in (4, 5)) or ranks if wants_cl else ranks


@st.composite
def _layout_pair(draw, shape: tuple[int, ...], x_choices: tuple[str, ...]):
    """(x layout, dy layout): the pair's kind first (LAYOUT_PAIRS), then the layouts. A pin on
    either layout draws both on their own ("other mixed", or same if they coincide)."""
    both = valid_layouts(shape)
    options = ["same", "other mixed"]
    if "channels_last" in x_choices and "contiguous" in x_choices:
        options[1:1] = list(_CL_PAIRS)
    if pin("x layout") is not None or pin("dy layout") is not None:
        kind = "other mixed"
    else:
        kind = draw(choose("layout pair", options))
    if kind in _CL_PAIRS:
        return _CL_PAIRS[kind]
    x_layout = draw(choose("x layout", x_choices))
    if kind == "same":
        return x_layout, x_layout
    return x_layout, draw(choose("dy layout", both))


def _reachable_pairs(x_layouts: tuple[str, ...]) -> tuple[str, ...]:
    """The layout pairs an input drawn from ``x_layouts`` can be in (a channels_last-only
    target's input is never contiguous: "x contiguous, dy channels_last" is out of its reach)."""
    if "channels_last" not in x_layouts:
        return ("same", "other mixed")
    return tuple(p for p in LAYOUT_PAIRS if p not in _CL_PAIRS or _CL_PAIRS[p][0] in x_layouts)


def dimensions(target: Target, *, max_elements: int) -> dict[str, tuple[str, ...]]:
    """The values of each coverage dimension ``target`` can reach within ``max_elements``: the
    report flags the ones no case reached."""
    ranks = sorted(target.ranks)
    x_layouts = target.layouts or LAYOUTS
    if max(ranks) < 4:
        x_layouts = tuple(v for v in x_layouts if v != "channels_last")
    dy_layouts = LAYOUTS if max(ranks) >= 4 else tuple(v for v in LAYOUTS if v != "channels_last")
    spatial_cap = max_elements if max(ranks) > 2 else 1
    fixed_track = fixed_argument(target, "track_running_stats")
    declared = {
        "dtype": (target.dtype,),
        "rank": tuple(f"{r}-D" for r in ranks),
        "x layout": tuple(x_layouts),
        "dy layout": tuple(dy_layouts),
        "layout pair": _reachable_pairs(x_layouts),
        "dy law": GRAD_LAWS,
        "affine": ("True", "False"),
        "track_running_stats": ("True", "False") if fixed_track is None else (str(fixed_track),),
        "momentum": ("(0, 1)", "None (cumulative)", "0", "1"),
        "batch N edge": EDGES,
        "channels C edge": EDGES,
        "spatial edge": EDGES if max(ranks) > 2 else ("1",),
        "eps": tuple(log_band(e, EPS_BANDS) for e in (1e-11, 1e-8, 1e-5, 1e-2)),
        "batch N": reachable_bands(min(MAX_BATCH, max_elements), N_BANDS),
        "channels C": reachable_bands(min(MAX_CHANNELS, max_elements // 2), C_BANDS),
        "spatial size": reachable_bands(spatial_cap // 2, S_BANDS),
        "reduction m": reachable_bands(max_elements, M_BANDS, low=2),
        "mode": STEPS,
        "mode switches": ("0", "1", "2-3", "4+"),
        "training steps before an eval": ("1", "2-9", "10+"),
        "eval backward": ("True", "False"),
    }
    if "train" not in target.modes:
        # An inference-only target (conv-BN folding) runs eval steps alone: no training step,
        # no sequence of modes, no backward to reach.
        declared["mode"] = ("eval",)
        for dim in ("mode switches", "training steps before an eval", "eval backward"):
            del declared[dim]
    return declared

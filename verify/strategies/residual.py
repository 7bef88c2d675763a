"""Residual-block cases: small printable descriptions Hypothesis draws and shrinks, and the data.

Two kinds of case. A :class:`BlockCase` is one block (or a short stack of identical-shape blocks)
on one batch: shapes, stride, BN mode and the *law* of the input values, for the checks that
compare a float32 block with its float64 reference. A :class:`StackCase` is a deep stack of
identity-shortcut blocks at initialisation, for the checks that measure signal propagation
(stream variance, gradient norm) against theory/; those draw many independent replicates of
their own, so a handful of cases suffices.

As in verify/strategies/batchnorm.py the data stay out of the case: ``make_input`` turns the law
and seed into the array, already rounded to float32 so the reference sees exactly the values the
target sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from verify.strategies.common import DISTRIBUTIONS, round_to, sizes
from verify.strategies.pins import choose, pin

#: Shapes a compiled target is checked on: every new shape (or stride pattern) costs
#: torch.compile a recompilation (seconds on a CPU), so compiled cases vary the values, the BN
#: mode and the seed, not the shape or the layout.
#: (batch, height, width, stride, identity shortcut?)
COMPILED_SHAPES = ((4, 8, 8, 1, True), (4, 8, 8, 2, False))

#: The coverage dimensions of a block case (:meth:`BlockCase.coverage`): the shortcut a block
#: takes (the stride-placement and missing-BN bugs live on a projection), its input's spatial
#: shape, told apart for stride-2 blocks ("stride 2 on": a stride-2 conv rounds odd sides up,
#: and a 1x1 input hides where the stride is applied), BN's mode, the input's layout, the
#: branch width and the law of the values.
SHORTCUTS = ("identity", "projection", "projection, stride 2")
SPATIAL = ("1x1", "odd side", "even sides")
PLANES = (1, 2, 3, 4, 7, 8, 16)
X_LAYOUTS = ("contiguous", "strided")


@dataclass(frozen=True)
class BlockCase:
    """One block (``depth`` > 1: that many identical-shape blocks in a row) on one batch."""

    batch: int
    in_channels: int
    planes: int
    height: int
    width: int
    stride: int = 1
    mode: str = "train"  # "train": batch statistics (and drop-path active); "eval": running
    distribution: str = "normal"
    log10_scale: float = 0.0  # per-channel std ~ 10**log10_scale
    log10_kappa: float = 0.0  # per-channel |mean|/std ~ 10**log10_kappa (0: mean 0)
    seed: int = 0
    noncontiguous: bool = False
    depth: int = 1
    expansion: int = 1  # the block's out_channels / planes: 1 basic, 4 bottleneck

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.height, self.width)

    def output_hw(self) -> tuple[int, int]:
        # 3x3 convs with padding 1 and 1x1 convs: ceil(size / stride).
        return (-(-self.height // self.stride), -(-self.width // self.stride))

    def values_per_channel(self) -> int:
        """m of the batch norms after the strided conv: batch * H_out * W_out."""
        h, w = self.output_hw()
        return self.batch * h * w

    def coverage(self) -> dict[str, str]:
        """The configuration this case puts a block in (the coverage table's dimensions)."""
        identity = self.stride == 1 and self.in_channels == self.planes * self.expansion
        return {
            "shortcut": _shortcut_of(stride=self.stride, identity=identity),
            _spatial_dimension(self.stride): spatial_label(self.height, self.width),
            "mode": self.mode,
            "x layout": X_LAYOUTS[self.noncontiguous],
            "planes": str(self.planes),
            "input law": self.distribution,
        }


@dataclass(frozen=True)
class StackCase:
    """``replicates`` independent stacks of ``depth`` identity-shortcut blocks at init.

    The input is a standard normal sample times 10**log10_scale on a 1x1 spatial grid, shifted
    by a constant large enough that the block's final ReLU provably never clips the stream (see
    verify/checks/residual.py, "the stream regime"). ``width`` is the stream's channel count.
    """

    width: int = 64
    batch: int = 256
    depth: int = 8
    replicates: int = 12
    log10_scale: float = 0.0
    seed: int = 0


def make_input(case: BlockCase, *, step: int = 0) -> np.ndarray:
    """The float64 input array the case describes, already rounded to float32."""
    rng = np.random.default_rng([case.seed, step, 1])
    n, c, h, w = case.input_shape
    z = DISTRIBUTIONS[case.distribution](rng, (n, c, h, w))
    scale = 10.0 ** (case.log10_scale + rng.uniform(-0.5, 0.5, size=c))
    kappa = 10.0**case.log10_kappa
    spread = math.sqrt(max(kappa**2 - 1.0, 0.0))
    loc = scale * spread * rng.choice([-1.0, 1.0], size=c)
    x = loc[None, :, None, None] + scale[None, :, None, None] * z
    if case.distribution == "near_float16_max":
        x = x / np.max(np.abs(x)) * 6.0e4
    return round_to(x, "float32")


def make_grad(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """An upstream gradient: standard normal, rounded to float32."""
    rng = np.random.default_rng([seed, 20_000])
    return round_to(rng.normal(size=shape), "float32")


def _train_ok(batch: int, h: int, w: int, stride: int) -> bool:
    # Training-mode batch norm needs more than one value per channel after the strided conv.
    return batch * (-(-h // stride)) * (-(-w // stride)) >= 2


@st.composite
def block_cases(
    draw,
    *,
    expansion: int,
    modes: tuple[str, ...],
    max_elements: int = 20_000,
    compiled: bool = False,
    identity_only: bool = False,
    max_depth: int = 1,
) -> BlockCase:
    """Blocks reaching the edge cases: C = 1, 1x1 spatial, odd sizes, stride 2 on odd sizes,
    projection and identity shortcuts, large |mean|/std, heavy tails, outliers, tiny and huge
    scales, non-contiguous input; BN in training and eval mode.

    ``expansion`` is the block's out_channels / planes (1 basic, 4 bottleneck); ``identity_only``
    keeps in_channels = planes * expansion and stride 1 (identity shortcut); ``compiled`` draws
    the shape from :data:`COMPILED_SHAPES` only.
    """
    mode = draw(choose("mode", list(modes)))
    if compiled:
        shapes = {
            _shortcut_of(stride=s[3], identity=s[4]): s
            for s in COMPILED_SHAPES
            if s[4] or not identity_only
        }
        batch, h, w, stride, identity = draw(choose("shortcut", shapes))
        planes = 8 // expansion if expansion > 1 else 8
        in_channels = planes * expansion if identity else 3
        noncontiguous = False
    else:
        planes = draw(choose("planes", {str(p): p for p in _planes(expansion)}))
        if pin("stride 2 on") in SPATIAL and not identity_only:
            shortcut = SHORTCUTS[2]  # a stride-2 input shape pinned: the shortcut follows
        else:
            shortcut = draw(choose("shortcut", ["identity"] if identity_only else list(SHORTCUTS)))
        identity, stride = shortcut == "identity", 2 if shortcut.endswith("stride 2") else 1
        if identity:
            in_channels = planes * expansion
        else:
            in_channels = draw(st.sampled_from([1, 2, 3, 5, 8, 16]))
            if in_channels == planes * expansion and stride == 1:
                in_channels += 1  # a projection case must change the shape
        budget = max(max_elements // max(in_channels, planes * expansion), 2)
        h, w = draw(choose(_spatial_dimension(stride), _spatial_options(budget // 2)))
        batch = draw(sizes(min_value=1, max_value=max(1, min(16, budget // (h * w)))))
        if not _train_ok(batch, h, w, stride):
            batch = 2
        noncontiguous = draw(choose("x layout", X_LAYOUTS)) == "strided"
    return BlockCase(
        batch=batch,
        in_channels=in_channels,
        planes=planes,
        height=h,
        width=w,
        stride=stride,
        mode=mode,
        distribution=draw(choose("input law", sorted(DISTRIBUTIONS))),
        log10_scale=draw(st.floats(-3.0, 3.0)),
        log10_kappa=draw(st.floats(0.0, 3.0)),
        seed=draw(st.integers(0, 2**32 - 1)),
        noncontiguous=noncontiguous,
        depth=draw(st.integers(1, max_depth)),
        expansion=expansion,
    )


def _planes(expansion: int) -> tuple[int, ...]:
    """The branch widths a block case draws (a bottleneck's output is 4x wider: up to 8)."""
    return tuple(p for p in PLANES if p <= (8 if expansion > 1 else 16))


def _shortcut_of(*, stride: int, identity: bool) -> str:
    return "identity" if identity else SHORTCUTS[stride]


def _spatial_dimension(stride: int) -> str:
    return "stride 2 on" if stride == 2 else "spatial"


def spatial_label(height: int, width: int) -> str:
    """A block input's spatial shape as the coverage table names it (:data:`SPATIAL`)."""
    if height == width == 1:
        return "1x1"
    return "odd side" if height % 2 or width % 2 else "even sides"


def _spatial_options(budget: int) -> dict[str, st.SearchStrategy[tuple[int, int]]]:
    """(height, width), each side up to 17 and their product up to ``budget``, for each
    :data:`SPATIAL` label reachable so: sizes favour their edges (common.sizes), then are made
    odd or even."""
    side = min(17, budget)

    def second(h: int, parity: int | None):
        top = min(17, budget // h)
        w = sizes(min_value=1 if parity is None else 2, max_value=top)
        return w if parity is None else w.map(lambda v: v - v % 2)

    options: dict[str, st.SearchStrategy[tuple[int, int]]] = {"1x1": st.just((1, 1))}
    if side >= 3:
        odd = sizes(min_value=3, max_value=side).map(lambda v: v if v % 2 else v - 1)
        options["odd side"] = odd.flatmap(
            lambda h: second(h, None).flatmap(lambda w: st.sampled_from([(h, w), (w, h)]))
        )
    if side >= 2 and budget >= 4:
        even = sizes(min_value=2, max_value=min(side, budget // 2)).map(lambda v: v - v % 2)
        options["even sides"] = even.flatmap(lambda h: second(h, 0).map(lambda w: (h, w)))
    return options


def dimensions(*, expansion: int, modes: tuple[str, ...], max_elements: int, compiled: bool):
    """The values of every coverage dimension a block target's cases can reach."""
    dims = {
        "shortcut": (SHORTCUTS[0], SHORTCUTS[2]) if compiled else SHORTCUTS,
        "mode": tuple(modes),
        "input law": tuple(sorted(DISTRIBUTIONS)),
    }
    if compiled:  # COMPILED_SHAPES: 8x8
        return dims | {"spatial": (SPATIAL[2],), "stride 2 on": (SPATIAL[2],)}
    dims["spatial"] = tuple(_spatial_options(max_elements // 2))  # a narrow block's reach
    dims["stride 2 on"] = dims["spatial"]
    dims["x layout"] = X_LAYOUTS
    dims["planes"] = tuple(str(p) for p in _planes(expansion))
    return dims


@st.composite
def stack_cases(
    draw,
    *,
    depth: tuple[int, int],
    replicates: int,
    scale: tuple[float, float] = (-1.0, 1.0),
    batches: tuple[int, ...] = (128, 256, 512),
) -> StackCase:
    """Deep stacks: width 64 (a bottleneck's 16 planes times 4), depth and batch drawn, input
    std 10**scale (batch norm in the branch must pin Var F = 1 whatever Var x is)."""
    return StackCase(
        width=64,
        batch=draw(st.sampled_from(list(batches))),
        depth=draw(st.integers(*depth)),
        replicates=replicates,
        log10_scale=draw(st.floats(*scale)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )

"""Pre-norm residual tail cases: the fused ``residual += x; y = norm(residual)`` step.

An :class:`AddNormCase` is a row-normalisation case (verify/strategies/rows.py) for the norm
after the add, plus what only the tail has: the residual stream's own law (a stream that has
grown through many blocks is larger than the branch output added to it: up to 10^3 times, where
the add rounds most of the branch away), the stream's layout, and whether a gradient flows back
into the written-back stream from later blocks (``dres``; without it only y is differentiated,
as in the last block).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from verify.dimensions import LAYOUTS
from verify.strategies import rows
from verify.strategies.common import log_band, round_to
from verify.strategies.pins import choose
from verify.strategies.rows import RowCase, bounded, drawn_shape, row_law, valid_layouts
from verify.targets.base import Target

#: The stream's scale over the branch output's, 10**ratio: equal, or grown through depth.
RATIO_BANDS = (0.1, 1.0, 10.0, 100.0)
#: log10 of the stream/branch scale ratio, one interval per coverage band (log_band's labels):
#: each band is drawn as often as the others, and pinned by its label.
RATIO_DRAWS = {
    "0.1": st.floats(-1.5, -1.0),
    "0.1..1": st.floats(-1.0, 0.0, exclude_min=True),
    "1..10": st.floats(0.0, 1.0, exclude_min=True),
    "10..100": st.floats(1.0, 2.0, exclude_min=True),
    ">100": st.floats(2.0, 3.0, exclude_min=True),
}


@dataclass(frozen=True)
class AddNormCase(RowCase):
    log10_residual_ratio: float = 0.0  # stream scale / branch scale ~ 10**ratio
    residual_layout: str = "contiguous"
    dres: bool = False  # a gradient into the written-back stream from later blocks

    def coverage(self) -> dict[str, str | tuple[str, ...]]:
        out = super().coverage()
        out.update(
            {
                "norm": self.kind,
                "residual layout": self.residual_layout,
                "stream/branch scale": log_band(10.0**self.log10_residual_ratio, RATIO_BANDS),
                "gradient into the stream": str(self.dres),
            }
        )
        return out


def norm_of(target: Target) -> str:
    """The norm after the add: ``options["norm"]``, else "layer" for a LayerNorm subclass and
    "rms" for anything else."""
    declared = target.options.get("norm")
    if declared:
        return declared
    factory = target.factory
    is_layer = isinstance(factory, type) and issubclass(factory, torch.nn.LayerNorm)
    return "layer" if is_layer else "rms"


def make_residual(case: AddNormCase, *, step: int = 0) -> np.ndarray:
    """The incoming stream: the row law at 10**ratio times the branch's scale, rounded."""
    rng = np.random.default_rng([case.seed, 70_000, step])
    shape = drawn_shape(case.shape, case.normalized_dims, case.residual_layout)
    rows_ = math.prod(shape[: len(shape) - case.normalized_dims])
    r = row_law(
        rng,
        rows_,
        case.n,
        distribution="normal" if case.distribution == "constant" else case.distribution,
        log10_kappa=case.log10_kappa,
        log10_scale=case.log10_scale + case.log10_residual_ratio,
    )
    # Half the limit: the sum x + residual stays finite too.
    r = bounded(0.5 * r, distribution="normal", dtype=case.dtype).reshape(shape)
    return np.broadcast_to(r, case.shape).copy()


def make_input(case: AddNormCase, *, step: int = 0) -> np.ndarray:
    """The branch output x, at half the finite limit (x + residual stays finite)."""
    return round_to(0.5 * rows.make_input(case, step=step), case.dtype)


def make_grad(case: AddNormCase, *, step: int = 0) -> np.ndarray:
    return rows.make_grad(case, step=step)


def make_dres(case: AddNormCase, *, step: int = 0) -> np.ndarray | None:
    """The gradient flowing into the written-back stream, or None (``dres`` off)."""
    if not case.dres:
        return None
    return rows.make_grad(dataclasses.replace(case, dy_layout="contiguous"), step=step, salt=80_000)


@st.composite
def add_norm_cases(draw, *, target: Target, max_elements: int = 20_000) -> AddNormCase:
    kind = norm_of(target)
    base = draw(rows.row_cases(target=target, kind=kind, max_elements=max_elements))
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(RowCase)}
    layouts = valid_layouts(base.shape, base.normalized_dims, LAYOUTS) or ("contiguous",)
    if target.compile or target.options.get("inplace"):
        layouts = ("contiguous",)  # an in-place stream must be contiguous (the kernel's contract)
    return AddNormCase(
        **fields,
        log10_residual_ratio=draw(choose("stream/branch scale", RATIO_DRAWS)),
        residual_layout=draw(choose("residual layout", layouts)),
        dres=draw(st.booleans()),
    )


def dimensions(target: Target, *, max_elements: int) -> dict[str, tuple[str, ...]]:
    kind = norm_of(target)
    out = rows.dimensions(target, kind=kind, max_elements=max_elements)
    if target.compile:
        return out
    inplace = target.options.get("inplace")
    out.update(
        {
            "norm": (kind,),
            "residual layout": ("contiguous",)
            if inplace
            else tuple(v for v in LAYOUTS if v != "channels_last" or 4 in target.ranks),
            "stream/branch scale": tuple(RATIO_DRAWS),
            "gradient into the stream": ("True", "False"),
        }
    )
    return out


__all__ = [
    "AddNormCase",
    "add_norm_cases",
    "dimensions",
    "make_dres",
    "make_grad",
    "make_input",
    "make_residual",
    "norm_of",
]

"""RMSNorm's benchmark: the training forward and its backward at transformer sizes
(verify/bench/families/rows.py).

Minimum bytes, for x of shape (tokens, hidden) (``act`` bytes in the target's dtype), a weight
of hidden float32 values and the saved 1/rms of one float32 per row: each input read once,
each output written once.

- fwd-train: read x, weight; write y and the saved 1/rms: 2 act + 4 (hidden + tokens).
- bwd-train: read dy, x, weight, the saved 1/rms; write dx, dweight:
  3 act + 4 (2 hidden + tokens).
"""

from __future__ import annotations

from verify.bench.families.base import FamilyBench, Op, params_like_input
from verify.bench.families.rows import ROW_AXES, ROW_SIZES, row_bytes

BENCH = FamilyBench(
    family="rmsnorm",
    axes=ROW_AXES,
    size_column="model",
    ranks=(2,),
    module=lambda factory, shape: factory(shape[-1]),
    param_dtype=params_like_input,
    ops=(
        Op(
            name="fwd-train",
            what="forward with autograd (saves 1/rms for the backward)",
            kind="forward",
            checks=("rmsnorm.forward",),
            min_bytes=row_bytes(acts=2, per_column=1, per_row=1),
        ),
        Op(
            name="bwd-train",
            what="backward: dx, dweight",
            kind="backward",
            checks=("rmsnorm.backward",),
            min_bytes=row_bytes(acts=3, per_column=2, per_row=1),
        ),
    ),
    sizes=ROW_SIZES,
)

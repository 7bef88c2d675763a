"""LayerNorm's benchmark: the training forward and its backward at transformer sizes
(verify/bench/families/rows.py).

Minimum bytes, for x of shape (tokens, hidden) (``act`` bytes in the target's dtype), weight
and bias of hidden float32 values and the saved mean and 1/std of one float32 per row: each
input read once, each output written once.

- fwd-train: read x, weight, bias; write y and the saved mean and 1/std:
  2 act + 4 (2 hidden + 2 tokens).
- bwd-train: read dy, x, weight, the saved mean and 1/std; write dx, dweight, dbias:
  3 act + 4 (3 hidden + 2 tokens).
"""

from __future__ import annotations

from verify.bench.families.base import FamilyBench, Op, params_like_input
from verify.bench.families.rows import ROW_AXES, ROW_SIZES, row_bytes

BENCH = FamilyBench(
    family="layernorm",
    axes=ROW_AXES,
    size_column="model",
    ranks=(2,),
    module=lambda factory, shape: factory(shape[-1]),
    param_dtype=params_like_input,
    ops=(
        Op(
            name="fwd-train",
            what="forward with autograd (saves mean and 1/std for the backward)",
            kind="forward",
            checks=("layernorm.forward",),
            min_bytes=row_bytes(acts=2, per_column=2, per_row=2),
        ),
        Op(
            name="bwd-train",
            what="backward: dx, dweight, dbias",
            kind="backward",
            checks=("layernorm.backward",),
            min_bytes=row_bytes(acts=3, per_column=3, per_row=2),
        ),
    ),
    sizes=ROW_SIZES,
)

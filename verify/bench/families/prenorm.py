"""The pre-norm tail's benchmark: ``h = x + residual; y = rms_norm(h)`` returning (y, h), the
step vLLM's ``fused_add_rms_norm`` fuses, and its backward, at transformer sizes
(verify/bench/families/rows.py).

Minimum bytes, for x and the residual stream of shape (tokens, hidden) (``act`` bytes in the
target's dtype), a weight of hidden float32 values and the saved 1/rms of one float32 per row:
each input read once, each output written once.

- tail-train: read x, residual, weight; write y, the updated stream h and the saved 1/rms:
  4 act + 4 (hidden + tokens). (In place, h overwrites residual: the same traffic.)
- bwd-train: read dy, the stream's own incoming gradient dh (h feeds the next block), h,
  weight, the saved 1/rms; write d(x + residual), one tensor (the add hands the same gradient
  to x and to residual), and dweight: 4 act + 4 (2 hidden + tokens).

The add + LayerNorm targets of the family are not timed: they move other bytes (a bias and a
mean), and the family's reference, torch-add-rmsnorm, is an add + RMSNorm.
"""

from __future__ import annotations

from verify.bench.families.base import FamilyBench, Op, params_like_input
from verify.bench.families.rows import ROW_AXES, ROW_SIZES, row_bytes


def _rms_only(target) -> str | None:
    if target.options.get("norm", "rms") != "rms":
        return (
            "an add + LayerNorm tail: the prenorm bench times add + RMSNorm (its byte counts "
            "and its reference torch-add-rmsnorm)"
        )
    return None


BENCH = FamilyBench(
    family="prenorm",
    axes=ROW_AXES,
    size_column="model",
    ranks=(2,),
    module=lambda factory, shape: factory(shape[-1]),
    param_dtype=params_like_input,
    ops=(
        Op(
            name="tail-train",
            what="fused tail: residual add + RMSNorm writing the updated stream, with autograd",
            kind="add-norm",
            # The written stream is verified on its own: a kernel may normalise right and
            # store the wrong h.
            checks=("prenorm.forward", "prenorm.residual_out"),
            min_bytes=row_bytes(acts=4, per_column=1, per_row=1),
        ),
        Op(
            name="bwd-train",
            what="backward of the tail: d(x + residual) from dy and the stream's dh, dweight",
            kind="add-norm-backward",
            checks=("prenorm.backward",),
            min_bytes=row_bytes(acts=4, per_column=2, per_row=1),
        ),
    ),
    sizes=ROW_SIZES,
    applies=_rms_only,
)

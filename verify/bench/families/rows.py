"""What the row norms' benchmarks share (layer norm, RMSNorm, the pre-norm tail): transformer
sizes (tokens, hidden) and the byte count of an operation over rows.

Tokens are a batch's sequences laid end to end (batch x sequence length), as a transformer
block's norm sees them; hidden is the model width.
"""

from __future__ import annotations

import math

from verify.bench.families.base import PARAM_BYTES, Size, activation_bytes

#: (tokens, hidden) on a GPU: model widths from 768 to 8192 at 2k to 16k tokens. The label
#: names models of that width (matched on hidden alone).
ROW_SIZES = (
    Size("GPT-2 small / BERT-base, hidden 768", (2048, 768), quick=True),
    Size("Llama-3.2 1B, hidden 2048", (8192, 2048)),
    Size("Llama-2 7B / Llama-3 8B, hidden 4096", (4096, 4096), quick=True),
    Size("Llama-2 7B / Llama-3 8B, hidden 4096", (16384, 4096)),
    Size("Llama-2 70B / Llama-3 70B, hidden 8192", (8192, 8192)),
)
ROW_AXES = "tokens, hidden"


def row_bytes(*, acts: int, per_column: int, per_row: int):
    """(shape, dtype) -> ``acts`` activation tensors, ``per_column`` float32 vectors of hidden
    values (weight, bias, their gradients) and ``per_row`` float32 values per row (the saved
    mean and 1/rms)."""

    def count(shape, dtype) -> int:
        rows, hidden = math.prod(shape[:-1]), shape[-1]
        vectors = (per_column * hidden + per_row * rows) * PARAM_BYTES
        return acts * activation_bytes(shape, dtype) + vectors

    return count


__all__ = ["ROW_AXES", "ROW_SIZES", "row_bytes"]

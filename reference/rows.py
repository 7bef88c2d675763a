"""What the row normalisations share: input checks and exactly rounded per-row sums.

A row normalisation (layer norm, RMSNorm, and group norm through layer norm) takes its statistics
over the trailing ``normalized_shape`` of its input: the leading dimensions index the rows, the
trailing ones are flattened into a row of ``n`` values. Every sum here is :func:`math.fsum`, the
correctly rounded sum of its float64 terms, for the reason reference.batchnorm gives: a reference
must not carry an error that depends on n or on the order of the terms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["as_float64", "check_eps", "fsum_rows", "normalized", "param", "split_rows"]


def as_float64(a, name: str) -> np.ndarray:
    """Any real array (numpy, torch, list) as a float64 numpy array; a copy, never a view."""
    if hasattr(a, "detach"):  # a torch tensor: leave autograd and the device behind
        a = a.detach().cpu().float() if str(a.dtype) == "torch.bfloat16" else a.detach().cpu()
        a = a.numpy()  # bfloat16 -> float32 above is exact: numpy has no bfloat16
    arr = np.array(a, copy=True)
    if arr.dtype.kind not in "iuf":
        raise ValueError(
            f"{name} must be a real (integer or floating) array, got dtype {arr.dtype}; "
            f"convert it with .astype(np.float64) if that is what you meant"
        )
    return arr.astype(np.float64, copy=False)


def check_eps(eps, *, default: str) -> float:
    """``eps`` as a float >= 0 (``default`` names the usual value for the message)."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps={eps!r}: must be a number >= 0 (default {default})") from None
    if not value >= 0.0:  # also catches NaN
        raise ValueError(f"eps={eps!r}: must be >= 0 (default {default})")
    return value


def normalized(normalized_shape) -> tuple[int, ...]:
    """torch's ``normalized_shape`` (an int or a sequence of ints) as a non-empty tuple."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    if (
        not isinstance(shape, Sequence)
        or not shape
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)
    ):
        raise ValueError(
            f"normalized_shape={normalized_shape!r}: must be an int or a non-empty sequence of "
            "positive ints, the trailing dimensions to normalise over, e.g. x.shape[-1:]"
        )
    return tuple(shape)


def split_rows(x: np.ndarray, normalized_shape, name: str = "x") -> tuple[np.ndarray, int]:
    """``x`` as a 2-D array of rows ``(prod(leading dims), n)`` after checking that its trailing
    dimensions are ``normalized_shape``; returns (rows, n)."""
    shape = normalized(normalized_shape)
    k = len(shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k :]) != shape:
        raise ValueError(
            f"{name} has shape {x.shape}, whose trailing dimensions are not "
            f"normalized_shape={shape}; pass normalized_shape=x.shape[-k:] for the last k "
            f"dimensions"
        )
    n = math.prod(shape)
    return x.reshape(-1, n), n


def param(v, shape: tuple[int, ...], name: str, default: float) -> np.ndarray:
    """A parameter of ``shape`` as float64 (``default`` filled when ``v`` is None)."""
    if v is None:
        return np.full(shape, default, dtype=np.float64)
    arr = as_float64(v, name)
    if arr.shape != shape:
        raise ValueError(
            f"{name} must have shape {shape}, got shape {arr.shape}; pass one value per element "
            f"of the normalised dimensions"
        )
    return arr


def fsum_rows(a: np.ndarray) -> np.ndarray:
    """Correctly rounded sum of each row of a 2-D array."""
    return np.array([math.fsum(row) for row in a.tolist()], dtype=np.float64).reshape(-1)

"""The fused pre-norm tail in float64: ``residual_out = x + residual; y = norm(residual_out)``.

Source: Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture" (the pre-norm
block h_{l+1} = h_l + F(norm(h_l))); the fused kernel is vLLM's ``fused_add_rms_norm`` and the
fused add + norm of Apex and Liger-Kernel: it takes a branch output ``x`` and the stream
``residual``, writes the new stream back and returns its normalisation.

The new stream is stored in the kernel's storage dtype, so it is rounded once:
``residual_out = round_to_storage(x + residual)``. The next block reads that rounded value, and
the norm that belongs with it is the norm of the rounded value: the reference normalises
``residual_out``, not the exact sum (theory.prenorm, fact 3; the bound on the stored stream is
theory.rounding.residual_add_tolerance).

Backward (theory.prenorm.fused_backward_matches): both inputs receive the same gradient,
``dresidual_out + J_norm(residual_out)^T dy``; the rounding is not differentiated (its derivative
is 1 almost everywhere).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from reference import layernorm, rmsnorm
from reference.rows import as_float64

__all__ = [
    "AddNormResult",
    "add_layer_norm",
    "add_layer_norm_backward",
    "add_rms_norm",
    "add_rms_norm_backward",
    "round_to_storage",
]

#: (significand bits p incl. the implicit one, frexp exponent of the smallest normal, largest
#: finite value) of each storage format. frexp writes a = f 2^e with 0.5 <= |f| < 1, so the
#: spacing of p-bit numbers near a is 2^(e - p), down to 2^(emin - p) for subnormals.
_FORMATS = {
    "float32": (24, -125, float(np.finfo(np.float32).max)),
    "bfloat16": (8, -125, (2.0 - 2.0**-7) * 2.0**127),
    "float16": (11, -13, 65504.0),
}


class AddNormResult(NamedTuple):
    """``y`` = the normalised new stream (exact, float64, not rounded: a check allows the output's
    own rounding); ``residual_out`` = the new stream as the kernel stores it (rounded)."""

    y: np.ndarray
    residual_out: np.ndarray


def round_to_storage(a, dtype) -> np.ndarray:
    """float64 values correctly rounded (to nearest, ties to even) to ``dtype``, as float64.

    Computed directly, not by casting through float32: torch casts float64 to bfloat16 through
    float32 and so rounds twice (1 + 2^-8 + 2^-30 becomes 1, not 1 + 2^-7).
    """
    key = str(dtype).removeprefix("torch.")
    a = as_float64(a, "a")
    if key == "float64":
        return a
    if key not in _FORMATS:
        raise ValueError(
            f"dtype={dtype!r}: storage dtype must be one of float64, {', '.join(_FORMATS)}"
        )
    p, emin, largest = _FORMATS[key]
    with np.errstate(over="ignore", invalid="ignore"):
        _, e = np.frexp(a)
        e = np.maximum(e, emin)
        # a * 2^(p-e) lies in [-2^p, 2^p]; rint rounds it to an integer, half to even, exactly
        q = np.ldexp(np.rint(np.ldexp(a, p - e)), e - p)
        return np.where(np.abs(q) > largest, np.copysign(np.inf, a), q)


def _add(x, residual, storage_dtype) -> np.ndarray:
    x = as_float64(x, "x")
    residual = as_float64(residual, "residual")
    if x.shape != residual.shape:
        raise ValueError(
            f"x has shape {x.shape} and residual {residual.shape}: the branch output and the "
            "stream it is added to must have the same shape"
        )
    # The float64 sum of two values of a storage dtype (<= 24 significant bits) is exact unless
    # their exponents differ by more than 29; then it is within 2^-53 of exact, far below the
    # storage rounding that follows.
    return round_to_storage(x + residual, storage_dtype)


def add_rms_norm(
    x, residual, normalized_shape, *, weight=None, eps=None, storage_dtype
) -> AddNormResult:
    """(y, residual_out) of the fused add + RMSNorm; ``eps=None`` is torch's default for
    ``storage_dtype`` (reference.rmsnorm)."""
    res = _add(x, residual, storage_dtype)
    fw = rmsnorm.forward(res, normalized_shape, weight=weight, eps=eps, dtype=storage_dtype)
    return AddNormResult(fw.y, res)


def add_layer_norm(
    x, residual, normalized_shape, *, weight=None, bias=None, eps: float = 1e-5, storage_dtype
) -> AddNormResult:
    """(y, residual_out) of the fused add + LayerNorm."""
    res = _add(x, residual, storage_dtype)
    fw = layernorm.forward(res, normalized_shape, weight=weight, bias=bias, eps=eps)
    return AddNormResult(fw.y, res)


def _stream_gradient(dresidual_out, dnorm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if dresidual_out is None:  # the last block: nothing reads residual_out downstream
        d = dnorm
    else:
        d_out = as_float64(dresidual_out, "dresidual_out")
        if d_out.shape != dnorm.shape:
            raise ValueError(
                f"dresidual_out has shape {d_out.shape}, x has {dnorm.shape}: pass the gradient "
                "with respect to residual_out (or None when nothing reads it)"
            )
        d = d_out + dnorm
    return d, d.copy()


def add_rms_norm_backward(
    dy,
    x,
    residual,
    normalized_shape,
    *,
    dresidual_out=None,
    weight=None,
    eps=None,
    storage_dtype,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dresidual, dweight) of the fused add + RMSNorm: dx = dresidual = dresidual_out +
    RMSNorm's dx at residual_out; dweight as RMSNorm's."""
    res = _add(x, residual, storage_dtype)
    dnorm, dweight = rmsnorm.backward(
        dy, res, normalized_shape, weight=weight, eps=eps, dtype=storage_dtype
    )
    return (*_stream_gradient(dresidual_out, dnorm), dweight)


def add_layer_norm_backward(
    dy,
    x,
    residual,
    normalized_shape,
    *,
    dresidual_out=None,
    weight=None,
    eps: float = 1e-5,
    storage_dtype,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dresidual, dweight, dbias) of the fused add + LayerNorm."""
    res = _add(x, residual, storage_dtype)
    dnorm, dweight, dbias = layernorm.backward(dy, res, normalized_shape, weight=weight, eps=eps)
    return (*_stream_gradient(dresidual_out, dnorm), dweight, dbias)

"""RMS normalisation in float64, written to be checked by eye.

Source: Zhang & Sennrich 2019, "Root Mean Square Layer Normalization"; layout and weight as in
``torch.nn.functional.rms_norm``: per row of the trailing ``normalized_shape`` (n values),
``ms = mean(x^2)``, ``y = x / sqrt(ms + eps) * weight`` (weight of shape ``normalized_shape``; no
bias, no centring).

``eps=None`` is torch's default: :func:`theory.rmsnorm.default_eps` of the dtype the kernel under
test ran in, finfo of its computation type (2^-23 for float32, bfloat16 and float16; 2^-52 for
float64). The reference sees only float64 values, so that dtype is an explicit ``dtype=``.

Accuracy: the squares of float32 or narrower values are exact in float64 (at most 48 significant
bits), and their sum is :func:`math.fsum`: ms is correctly rounded; the rest is elementwise.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from reference.rows import as_float64, check_eps, fsum_rows, normalized, param, split_rows
from theory.rmsnorm import default_eps

__all__ = ["ForwardResult", "backward", "forward", "resolve_eps"]


class ForwardResult(NamedTuple):
    """What RMSNorm computes. ``y`` and ``xhat`` have the shape of ``x``; ``ms`` (mean square)
    and ``rstd = 1/sqrt(ms + eps)`` have the leading shape ``x.shape[:-len(normalized_shape)]``."""

    y: np.ndarray
    ms: np.ndarray
    xhat: np.ndarray
    rstd: np.ndarray


def resolve_eps(eps, dtype) -> float:
    """``eps``, or torch's ``eps=None`` default for an input of ``dtype``."""
    if eps is None:
        if dtype is None:
            raise ValueError(
                "eps=None needs dtype=: torch's default is finfo of the computation type of the "
                "input (2^-23 for float32/bfloat16/float16, 2^-52 for float64), and the "
                "reference only sees float64 values; pass e.g. dtype='bfloat16'"
            )
        return default_eps(dtype)
    return check_eps(eps, default="None, i.e. default_eps(dtype)")


def forward(x, normalized_shape, *, weight=None, eps=None, dtype=None) -> ForwardResult:
    """RMSNorm over the trailing ``normalized_shape``: per row ``ms = sum(x^2)/n``,
    ``rstd = 1/sqrt(ms + eps)``, ``xhat = x rstd``, ``y = weight xhat`` (weight 1 when None)."""
    x = as_float64(x, "x")
    shape = normalized(normalized_shape)
    rows, n = split_rows(x, shape)
    eps = resolve_eps(eps, dtype)
    w = param(weight, shape, "weight", 1.0).reshape(-1)

    ms = fsum_rows(rows * rows) / n
    rstd = 1.0 / np.sqrt(ms + eps)
    xhat = rows * rstd[:, None]
    lead = x.shape[: x.ndim - len(shape)]
    return ForwardResult(
        (xhat * w).reshape(x.shape), ms.reshape(lead), xhat.reshape(x.shape), rstd.reshape(lead)
    )


def backward(
    dy, x, normalized_shape, *, weight=None, eps=None, dtype=None
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of RMSNorm: ``(dx, dweight)``, dweight of shape ``normalized_shape``. Closed form
    (theory.rmsnorm, proved from autodiff), per row, with ``g = dy * weight``::

        dx      = rstd * (g - xhat * mean(g * xhat))
        dweight = sum over rows of dy * xhat

    The subtracted term is the dependence of the RMS on x.
    """
    x = as_float64(x, "x")
    dy = as_float64(dy, "dy")
    if dy.shape != x.shape:
        raise ValueError(
            f"dy must have the shape of x, {x.shape}, got {dy.shape}; pass the gradient of the "
            f"loss with respect to the output y = forward(x, ...).y"
        )
    shape = normalized(normalized_shape)
    _, n = split_rows(x, shape)
    w = param(weight, shape, "weight", 1.0).reshape(-1)
    fw = forward(x, shape, eps=eps, dtype=dtype)
    xhat = fw.xhat.reshape(-1, n)
    dy2 = dy.reshape(-1, n)

    g = dy2 * w
    mean_g_xhat = fsum_rows(g * xhat)[:, None] / n
    dx = fw.rstd.reshape(-1, 1) * (g - xhat * mean_g_xhat)
    dweight = fsum_rows((dy2 * xhat).T).reshape(shape)
    return dx.reshape(x.shape), dweight

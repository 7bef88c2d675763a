"""Layer normalisation in float64, written to be checked by eye.

Source: Ba, Kiros & Hinton 2016, "Layer Normalization"; layout and affine as in
``torch.nn.functional.layer_norm``: the statistics of each row are taken over the trailing
``normalized_shape`` (n values), the biased variance normalises, and ``weight``/``bias`` have the
shape ``normalized_shape`` (one value per element of a row, shared by all rows).

Accuracy: two-pass statistics (mean, then the sum of squared deviations) with :func:`math.fsum`
(see reference.rows): the relative error of the variance is a few u = 2**-53 whatever n and the
condition number of the row; the only other roundings are elementwise.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from reference.rows import as_float64, check_eps, fsum_rows, normalized, param, split_rows

__all__ = ["ForwardResult", "backward", "forward"]


class ForwardResult(NamedTuple):
    """What layer norm computes. ``y`` and ``xhat`` have the shape of ``x``; the per-row
    statistics have the leading shape ``x.shape[:-len(normalized_shape)]``."""

    y: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    xhat: np.ndarray
    rstd: np.ndarray


def forward(x, normalized_shape, *, weight=None, bias=None, eps: float = 1e-5) -> ForwardResult:
    """Layer norm over the trailing ``normalized_shape``: per row ``mean = sum(x)/n``,
    ``var = sum((x - mean)^2)/n``, ``rstd = 1/sqrt(var + eps)``, ``xhat = (x - mean) rstd``,
    ``y = weight xhat + bias`` (weight 1 and bias 0 when None). A row of one value has var 0,
    xhat 0 and y = bias, as in torch."""
    x = as_float64(x, "x")
    shape = normalized(normalized_shape)
    rows, n = split_rows(x, shape)
    eps = check_eps(eps, default="1e-5")
    w = param(weight, shape, "weight", 1.0).reshape(-1)
    b = param(bias, shape, "bias", 0.0).reshape(-1)

    mean = fsum_rows(rows) / n
    var = fsum_rows((rows - mean[:, None]) ** 2) / n  # second pass: deviations from the mean
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (rows - mean[:, None]) * rstd[:, None]
    y = xhat * w + b
    lead = x.shape[: x.ndim - len(shape)]
    return ForwardResult(
        y.reshape(x.shape),
        mean.reshape(lead),
        var.reshape(lead),
        xhat.reshape(x.shape),
        rstd.reshape(lead),
    )


def backward(
    dy, x, normalized_shape, *, weight=None, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of layer norm: ``(dx, dweight, dbias)``, dweight and dbias of shape
    ``normalized_shape``. Closed form (theory.layernorm, proved from autodiff), per row, with
    ``g = dy * weight``::

        dx      = rstd / n * (n*g - sum(g) - xhat * sum(g * xhat))
        dweight = sum over rows of dy * xhat
        dbias   = sum over rows of dy

    The two subtracted terms of dx are the mean's and the variance's dependence on x.
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
    fw = forward(x, shape, eps=eps)
    xhat = fw.xhat.reshape(-1, n)
    dy2 = dy.reshape(-1, n)
    rstd = fw.rstd.reshape(-1, 1)

    g = dy2 * w
    sum_g = fsum_rows(g)[:, None]
    sum_g_xhat = fsum_rows(g * xhat)[:, None]
    dx = rstd / n * (n * g - sum_g - xhat * sum_g_xhat)
    # parameter gradients reduce over the rows: one fsum per column
    dweight = fsum_rows((dy2 * xhat).T).reshape(shape)
    dbias = fsum_rows(dy2.T).reshape(shape)
    return dx.reshape(x.shape), dweight, dbias

"""Group normalisation in float64: layer norm over each group, then a per-channel affine.

Source: Wu & He 2018, "Group Normalization"; layout as in ``torch.nn.functional.group_norm``:
``x`` is ``(N, C, *spatial)``, group k of a sample holds channels ``k*C/G .. (k+1)*C/G - 1`` at
every spatial position, and ``weight``/``bias`` have shape ``(C,)``.

Written as what it is: ``x`` reshaped to ``(N, G, (C/G) * prod(spatial))`` is a batch of rows,
and :mod:`reference.layernorm` (two-pass, fsum) normalises them. The backward is layer norm's
row backward with ``g = dy * weight[c]`` as its upstream gradient (the weight varies within a
group, so it must enter before the row sums); the parameter gradients sum over the samples and
the spatial positions of each channel.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from reference import layernorm
from reference.rows import as_float64, check_eps, fsum_rows

__all__ = ["ForwardResult", "backward", "forward"]


class ForwardResult(NamedTuple):
    """What group norm computes. ``y`` and ``xhat`` have the shape of ``x``; the statistics have
    shape ``(N, G)``."""

    y: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    xhat: np.ndarray
    rstd: np.ndarray


def _check(x: np.ndarray, num_groups) -> tuple[int, int]:
    """Return (C, n = values per group) for an (N, C, *spatial) input, or raise ValueError."""
    if x.ndim < 2:
        raise ValueError(
            f"x must have rank >= 2 with layout (N, C, *spatial), got shape {x.shape}; add a "
            "batch axis, e.g. x[None]"
        )
    c = x.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"num_groups={num_groups!r}: must be an int >= 1 dividing C = {c}")
    if c % num_groups:
        raise ValueError(
            f"num_groups={num_groups} does not divide the {c} channels of x (shape {x.shape}); "
            "torch.nn.GroupNorm requires C % num_groups == 0"
        )
    return c, c // num_groups * math.prod(x.shape[2:])


def _per_channel(v, c: int, name: str, default: float) -> np.ndarray:
    if v is None:
        return np.full(c, default, dtype=np.float64)
    arr = as_float64(v, name)
    if arr.shape != (c,):
        raise ValueError(
            f"{name} must have one value per channel, shape ({c},), got shape {arr.shape}"
        )
    return arr


def _bcast(v: np.ndarray, ndim: int) -> np.ndarray:
    """A ``(C,)`` vector shaped ``(1, C, 1, ...)`` to broadcast against an ``ndim`` array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def forward(x, num_groups: int, *, weight=None, bias=None, eps: float = 1e-5) -> ForwardResult:
    """Group norm: layer norm of each group's n = (C/G) prod(spatial) values, then
    ``y = weight[c] xhat + bias[c]``."""
    x = as_float64(x, "x")
    c, n = _check(x, num_groups)
    eps = check_eps(eps, default="1e-5")
    w = _per_channel(weight, c, "weight", 1.0)
    b = _per_channel(bias, c, "bias", 0.0)
    groups = x.reshape(x.shape[0], num_groups, n)
    fw = layernorm.forward(groups, (n,), eps=eps)
    xhat = fw.xhat.reshape(x.shape)
    y = xhat * _bcast(w, x.ndim) + _bcast(b, x.ndim)
    return ForwardResult(y, fw.mean, fw.var, xhat, fw.rstd)


def backward(
    dy, x, num_groups: int, *, weight=None, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of group norm: ``(dx, dweight, dbias)``, dweight and dbias of shape ``(C,)``.

    Per group, with ``g = dy * weight[c]``: ``dx = rstd/n (n g - sum g - xhat sum(g xhat))``
    (reference.layernorm.backward of the group rows with upstream g and unit weight);
    ``dweight[c] = sum of dy xhat`` and ``dbias[c] = sum of dy`` over samples and positions.
    """
    x = as_float64(x, "x")
    dy = as_float64(dy, "dy")
    if dy.shape != x.shape:
        raise ValueError(
            f"dy must have the shape of x, {x.shape}, got {dy.shape}; pass the gradient of the "
            f"loss with respect to the output y = forward(x, ...).y"
        )
    c, n = _check(x, num_groups)
    w = _per_channel(weight, c, "weight", 1.0)
    g = dy * _bcast(w, x.ndim)
    shape = (x.shape[0], num_groups, n)
    dx, _, _ = layernorm.backward(g.reshape(shape), x.reshape(shape), (n,), eps=eps)
    xhat = forward(x, num_groups, eps=eps).xhat

    def per_channel_sum(a: np.ndarray) -> np.ndarray:
        return fsum_rows(np.moveaxis(a, 1, 0).reshape(c, -1))

    return dx.reshape(x.shape), per_channel_sum(dy * xhat), per_channel_sum(dy)

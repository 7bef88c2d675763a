"""Batch normalisation in float64, written to be checked by eye.

Source: Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift", Algorithm 1 (forward) and Section 3 (backward); running statistics as in
``torch.nn.BatchNorm2d`` (unbiased variance, ``momentum=None`` for a cumulative average).

Layout: channel axis 1, i.e. ``(N, C, *spatial)``; every statistic is per channel over the
``m = N * prod(spatial)`` values of that channel.

Accuracy: the statistics use the two-pass algorithm (mean first, then the sum of squared
deviations, Chan, Golub & LeVeque 1983) and every sum is :func:`math.fsum`, which returns the
correctly rounded sum of its float64 terms. numpy's pairwise ``np.sum`` would be faster and its
error (about ``log2(m) * u * sum|x|``) is small, but a reference should not carry an error that
depends on ``m`` or on the order of the terms at all; with ``fsum`` the only roundings left are
the elementwise ones (one per deviation, square and division), so the relative error of the
variance is a few ``u = 2**-53`` whatever ``m`` and the condition number ``sqrt(1 + mean^2/var)``
of the data (for float32 or lower inputs, which are exact in float64). The price is a Python-level
loop over channels, fine for the sizes the suite checks (up to ~1e6 values per channel).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "ForwardResult",
    "RunningStats",
    "backward",
    "eval_forward",
    "forward",
    "update_running",
]

#: torch's message for a training-mode batch with a single value per channel; quoted so that a
#: reader of a failure can match the reference's error with the one under test.
TORCH_M1_MESSAGE = "Expected more than 1 value per channel when training"


class ForwardResult(NamedTuple):
    """Everything training-mode batch norm computes. Per-channel arrays have shape ``(C,)``."""

    y: np.ndarray
    mean: np.ndarray
    var_biased: np.ndarray
    var_unbiased: np.ndarray
    xhat: np.ndarray
    invstd: np.ndarray


class RunningStats(NamedTuple):
    """Running statistics after one update (``num_batches_tracked`` already incremented)."""

    mean: np.ndarray
    var: np.ndarray
    num_batches_tracked: int


# --------------------------------------------------------------------------------------------
# input handling


def _as_float64(a, name: str) -> np.ndarray:
    """Any real array (numpy, torch, list) as a float64 numpy array; a copy, never a view."""
    if hasattr(a, "detach"):  # a torch tensor: leave autograd and the device behind
        a = a.detach().cpu().numpy()
    arr = np.array(a, copy=True)
    if arr.dtype.kind not in "iuf":
        raise ValueError(
            f"{name} must be a real (integer or floating) array, got dtype {arr.dtype}; "
            f"convert it with .astype(np.float64) if that is what you meant"
        )
    return arr.astype(np.float64, copy=False)


def _check_input(x: np.ndarray, name: str = "x") -> tuple[int, int]:
    """Return ``(C, m)`` for an ``(N, C, *spatial)`` array or raise ValueError."""
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have rank >= 2 with layout (N, C, *spatial), got shape {x.shape}; "
            f"add a batch or channel axis, e.g. x.reshape(-1, 1) for one channel"
        )
    c = x.shape[1]
    m = x.size // c if c else 0
    return c, m


def _check_training_m(x: np.ndarray, m: int, fn: str) -> None:
    # m = 1 makes the unbiased variance 0/0 and xhat identically 0: torch refuses it, and so do
    # we, with its message quoted.
    if m < 2:
        raise ValueError(
            f"{fn}: x has shape {x.shape}, so m = N*prod(spatial) = {m} value(s) per channel; "
            f"training-mode batch norm needs m >= 2 (torch: '{TORCH_M1_MESSAGE}'). "
            f"Use a batch with more than one value per channel, or eval_forward with running "
            f"statistics"
        )


def _per_channel(v, c: int, name: str, default: float | None = None) -> np.ndarray:
    """A length-``C`` float64 vector (``default`` filled when ``v`` is None)."""
    if v is None:
        if default is None:
            raise ValueError(f"{name} is required (a length-{c} per-channel array)")
        return np.full(c, default, dtype=np.float64)
    arr = _as_float64(v, name).reshape(-1)
    if arr.shape != (c,):
        raise ValueError(
            f"{name} must have one value per channel, i.e. shape ({c},), got shape "
            f"{np.shape(v)}; pass a vector of length C = x.shape[1] = {c}"
        )
    return arr


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not eps >= 0.0:  # also catches NaN
        raise ValueError(f"eps must be >= 0, got eps={eps!r}; torch's default is eps=1e-5")
    return eps


def _rows(x: np.ndarray) -> np.ndarray:
    """``(N, C, *spatial)`` -> ``(C, m)``: one row per channel."""
    return np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)


def _fsum_rows(a: np.ndarray) -> np.ndarray:
    """Correctly rounded sum of each row of a 2-D array."""
    return np.array([math.fsum(row) for row in a.tolist()], dtype=np.float64)


def _bcast(v: np.ndarray, ndim: int) -> np.ndarray:
    """A ``(C,)`` vector shaped ``(1, C, 1, ...)`` to broadcast against an ``ndim`` array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


# --------------------------------------------------------------------------------------------
# forward / backward / eval


def forward(x, *, gamma=None, beta=None, eps: float = 1e-5) -> ForwardResult:
    """Training-mode batch norm (Ioffe & Szegedy 2015, Algorithm 1) in float64.

    ``mean = sum(x)/m``; ``var_biased = sum((x-mean)^2)/m`` (two-pass, used to normalise);
    ``var_unbiased = sum((x-mean)^2)/(m-1)`` (what running_var accumulates);
    ``invstd = 1/sqrt(var_biased + eps)``; ``xhat = (x-mean)*invstd``; ``y = gamma*xhat + beta``.
    ``gamma``/``beta`` default to 1 and 0 (no affine).
    """
    x = _as_float64(x, "x")
    c, m = _check_input(x)
    _check_training_m(x, m, "forward")
    eps = _check_eps(eps)
    gamma = _per_channel(gamma, c, "gamma", 1.0)
    beta = _per_channel(beta, c, "beta", 0.0)

    rows = _rows(x)
    mean = _fsum_rows(rows) / m
    sq_dev = _fsum_rows((rows - mean[:, None]) ** 2)  # second pass: deviations from the mean
    var_biased = sq_dev / m
    var_unbiased = sq_dev / (m - 1)
    invstd = 1.0 / np.sqrt(var_biased + eps)

    xhat = (x - _bcast(mean, x.ndim)) * _bcast(invstd, x.ndim)
    y = xhat * _bcast(gamma, x.ndim) + _bcast(beta, x.ndim)
    return ForwardResult(y, mean, var_biased, var_unbiased, xhat, invstd)


def backward(dy, x, *, gamma=None, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of training-mode batch norm: ``(dx, dgamma, dbeta)``.

    Closed form (Ioffe & Szegedy 2015, Section 3, simplified), per channel with ``m`` values::

        dx     = gamma / (m * sqrt(var + eps)) * (m*dy - sum(dy) - xhat * sum(dy * xhat))
        dgamma = sum(dy * xhat)
        dbeta  = sum(dy)

    where ``var`` is the biased batch variance. The mean and variance are functions of ``x`` here
    (the two subtracted terms are their contributions); treating them as constants is a known bug.
    """
    x = _as_float64(x, "x")
    dy = _as_float64(dy, "dy")
    c, m = _check_input(x)
    if dy.shape != x.shape:
        raise ValueError(
            f"dy must have the shape of x, {x.shape}, got {dy.shape}; pass the gradient of the "
            f"loss with respect to the output y = forward(x).y"
        )
    _check_training_m(x, m, "backward")
    gamma = _per_channel(gamma, c, "gamma", 1.0)
    fw = forward(x, eps=eps)

    dbeta = _fsum_rows(_rows(dy))
    dgamma = _fsum_rows(_rows(dy * fw.xhat))
    scale = gamma * fw.invstd / m
    dx = _bcast(scale, x.ndim) * (m * dy - _bcast(dbeta, x.ndim) - fw.xhat * _bcast(dgamma, x.ndim))
    return dx, dgamma, dbeta


def eval_forward(
    x, running_mean, running_var, *, gamma=None, beta=None, eps: float = 1e-5
) -> np.ndarray:
    """Inference-mode batch norm: normalise with the running statistics, not the batch's.

    ``y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta`` (Ioffe & Szegedy 2015,
    Algorithm 2). Any ``m`` (even 1) is fine here.
    """
    x = _as_float64(x, "x")
    c, _ = _check_input(x)
    eps = _check_eps(eps)
    rm = _per_channel(running_mean, c, "running_mean")
    rv = _per_channel(running_var, c, "running_var")
    if np.any(rv < 0):
        raise ValueError(
            f"running_var must be >= 0, got {rv.tolist()}; it is a variance (torch initialises "
            f"it to ones)"
        )
    gamma = _per_channel(gamma, c, "gamma", 1.0)
    beta = _per_channel(beta, c, "beta", 0.0)
    invstd = 1.0 / np.sqrt(rv + eps)
    xhat = (x - _bcast(rm, x.ndim)) * _bcast(invstd, x.ndim)
    return xhat * _bcast(gamma, x.ndim) + _bcast(beta, x.ndim)


# --------------------------------------------------------------------------------------------
# running statistics


def update_running(
    running_mean,
    running_var,
    batch_mean,
    batch_var_unbiased,
    *,
    momentum: float | None,
    num_batches_tracked: int = 0,
    convention: str = "torch",
) -> RunningStats:
    """One update of the running statistics, as ``torch.nn.BatchNorm2d`` does in training.

    ``num_batches_tracked`` is the counter *before* this batch (the module's buffer); it is
    incremented first, and with ``momentum=None`` the factor is ``1/num_batches_tracked`` after
    the increment, which makes the running values the cumulative average of every batch seen.

    Conventions (the same exponential average, the momentum read two ways):

    - ``'torch'``: ``new = (1 - momentum) * old + momentum * batch`` (torch default 0.1);
    - ``'keras'``: ``new = momentum * old + (1 - momentum) * batch`` (Keras default 0.99).

    ``batch_var_unbiased`` must be the unbiased variance (``m/(m-1)`` times the biased one):
    torch accumulates that one, and accumulating the biased one is a known bug.
    """
    if convention not in ("torch", "keras"):
        raise ValueError(
            f"convention must be 'torch' or 'keras', got {convention!r}; 'keras' reads momentum "
            f"as the weight of the old value (keras momentum = 1 - torch momentum)"
        )
    if isinstance(num_batches_tracked, bool) or int(num_batches_tracked) != num_batches_tracked:
        raise ValueError(
            f"num_batches_tracked must be a non-negative integer, got {num_batches_tracked!r}"
        )
    num_batches_tracked = int(num_batches_tracked)
    if num_batches_tracked < 0:
        raise ValueError(
            f"num_batches_tracked must be >= 0, got {num_batches_tracked}; pass the module's "
            f"counter before this batch (0 for a fresh module)"
        )
    if momentum is None:
        if convention == "keras":
            raise ValueError(
                "momentum=None (cumulative average) exists only in the 'torch' convention; pass "
                "convention='torch' or a number for momentum"
            )
    else:
        momentum = float(momentum)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1] or be None, got momentum={momentum!r}")

    rm = _as_float64(running_mean, "running_mean").reshape(-1)
    c = rm.shape[0]
    rv = _per_channel(running_var, c, "running_var")
    bm = _per_channel(batch_mean, c, "batch_mean")
    bv = _per_channel(batch_var_unbiased, c, "batch_var_unbiased")

    num_batches_tracked += 1
    if momentum is None:
        factor = 1.0 / num_batches_tracked  # weight of the new batch: cumulative average
    elif convention == "torch":
        factor = momentum
    else:
        factor = 1.0 - momentum
    new_mean = (1.0 - factor) * rm + factor * bm
    new_var = (1.0 - factor) * rv + factor * bv
    return RunningStats(new_mean, new_var, num_batches_tracked)

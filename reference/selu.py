"""SELU and AlphaDropout in float64.

Source: Klambauer, Unterthiner, Mayr & Hochreiter 2017, "Self-Normalizing Neural Networks":
SELU is eq. 2; alpha_01 and lambda_01 solve the fixed-point equations g(0, 1) = (0, 1) (eq. 4-5)
and are taken from :mod:`theory.selu` (derived there to 50 digits), never retyped here.
AlphaDropout is Section "New Dropout Technique": dropped units are set to
``alpha' = -lambda*alpha`` (SELU's negative saturation value) and an affine map ``a*x + b``
restores mean 0 and variance 1.
"""

from __future__ import annotations

import numpy as np

from theory import selu as th

__all__ = ["ALPHA_01", "ALPHA_PRIME", "LAMBDA_01", "alpha_dropout", "alpha_dropout_affine", "selu"]

#: alpha_01 and lambda_01 rounded once, from the derivation, to the nearest float64.
ALPHA_01: float = float(th.alpha01())
LAMBDA_01: float = float(th.lambda01())
#: The value a dropped unit takes: SELU's limit at -infinity, -lambda_01 * alpha_01.
ALPHA_PRIME: float = float(-th.lambda01() * th.alpha01())


def _as_float64(a, name: str) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu().numpy()
    arr = np.array(a, copy=True)
    if arr.dtype.kind not in "iufb":
        raise ValueError(
            f"{name} must be a real array, got dtype {arr.dtype}; convert it with "
            f".astype(np.float64)"
        )
    return arr.astype(np.float64, copy=False)


def selu(x) -> np.ndarray:
    """``lambda_01 * x`` for ``x > 0``, ``lambda_01 * alpha_01 * (exp(x) - 1)`` otherwise.

    ``exp(x) - 1`` is computed as ``expm1(x)``: for small ``|x|`` the subtraction would cancel
    and lose all relative accuracy (torch's float64 kernel also uses expm1).
    """
    x = _as_float64(x, "x")
    return LAMBDA_01 * np.where(x > 0, x, ALPHA_01 * np.expm1(np.minimum(x, 0.0)))


def _check_p(p: float) -> float:
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(
            f"p (the drop probability) must lie in [0, 1), got p={p!r}; p = 1 drops every unit "
            f"and the variance-restoring scale a = (q + alpha'^2 q (1-q))^(-1/2) is infinite"
        )
    return p


def alpha_dropout_affine(p: float) -> tuple[float, float]:
    """The affine correction ``(a, b)`` of AlphaDropout with drop probability ``p``.

    With keep probability ``q = 1 - p`` and ``alpha' = -lambda_01 * alpha_01`` (Klambauer et al.
    2017, eq. 7 with mean 0 and variance 1)::

        a = (q + alpha'^2 * q * (1 - q)) ** -0.5
        b = -a * (1 - q) * alpha'

    For p = 0.1: a = 0.921284516149711, b = 0.161970970057570.
    """
    p = _check_p(p)
    q = 1.0 - p
    a = (q + ALPHA_PRIME**2 * q * (1.0 - q)) ** -0.5
    b = -a * (1.0 - q) * ALPHA_PRIME
    return a, b


def alpha_dropout(x, mask, p: float) -> np.ndarray:
    """AlphaDropout with a given keep ``mask`` (1 kept, 0 dropped).

    ``a * (x*mask + alpha'*(1-mask)) + b`` with ``(a, b) = alpha_dropout_affine(p)``.

    The mask is an argument, not drawn here, so the result is a deterministic function that can
    be compared with an implementation whose mask has been recovered or fixed.
    """
    x = _as_float64(x, "x")
    mask = _as_float64(mask, "mask")
    if mask.shape != x.shape:
        raise ValueError(
            f"mask must have the shape of x, {x.shape}, got {mask.shape}; pass one 0/1 keep "
            f"flag per element"
        )
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError("mask must contain only 0 (dropped) and 1 (kept); got other values")
    a, b = alpha_dropout_affine(p)
    return a * (x * mask + ALPHA_PRIME * (1.0 - mask)) + b

"""The distributions ``torch.nn.init`` samplers should draw from, as frozen ``scipy.stats`` laws.

Sources: Glorot & Bengio 2010 ("Understanding the difficulty of training deep feedforward neural
networks", eq. 16) for Xavier; He, Zhang, Ren & Sun 2015 ("Delving Deep into Rectifiers") for
Kaiming; ``torch.nn.init`` for the fan convention and the gains that are choices rather than
derivations (tanh 5/3, selu 3/4).

Each function takes the weight's *shape* (not a tensor) and returns the law its entries should
follow, so a check can compare samples with it (``scipy.stats.kstest(samples, law.cdf)``) or read
its bounds (``law.support()``) and variance (``law.var()``). The signatures mirror
``torch.nn.init`` (``gain``, ``a``, ``mode``, ``nonlinearity``) so a call site reads the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

__all__ = [
    "calculate_gain",
    "fans",
    "kaiming_normal",
    "kaiming_uniform",
    "xavier_normal",
    "xavier_uniform",
]

#: Layers with no nonlinearity after them: the gain is 1.
_LINEAR = (
    "linear",
    "identity",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of this shape, torch's convention.

    ``fan_in = shape[1] * prod(shape[2:])`` and ``fan_out = shape[0] * prod(shape[2:])``: a Linear
    weight is ``(out, in)`` and a conv weight ``(out, in/groups, *kernel)``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(
            f"shape must have at least 2 dimensions (out, in, *kernel) to define fan_in and "
            f"fan_out, got shape={shape}; a bias vector has no fans (use a law of your own)"
        )
    if any(s <= 0 for s in shape):
        raise ValueError(
            f"shape must have only positive sizes, got shape={shape}; a zero-element weight has "
            f"no distribution (torch.nn.init leaves it untouched with a warning)"
        )
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain torch.nn.init.calculate_gain returns, computed from its reason.

    For a positively homogeneous ``f`` (ReLU, leaky ReLU with slope ``s``) the gain is
    ``1/sqrt(E[f(z)^2])`` with ``z ~ N(0, 1)`` (He et al. 2015): ``E[f(z)^2] = (1 + s^2)/2``, so
    ``sqrt(2/(1 + s^2))``, which is ``sqrt(2)`` for ReLU (``s = 0``). Linear layers and sigmoid get
    1. tanh (5/3) and selu (3/4) are torch's choices, not derivations (theory gives 1 for SELU).
    ``param`` is leaky ReLU's negative slope, 0.01 when None as in torch.
    """
    if nonlinearity in _LINEAR or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "selu":
        return 3.0 / 4.0
    if nonlinearity in ("relu", "leaky_relu"):
        if nonlinearity == "relu":
            slope = 0.0
        elif param is None:
            slope = 0.01  # torch's default negative slope
        elif isinstance(param, bool) or not isinstance(param, (int, float)):
            raise ValueError(
                f"param (leaky_relu's negative slope) must be a number, got param={param!r}"
            )
        else:
            slope = float(param)
        second_moment = (1.0 + slope**2) / 2.0  # E[f(z)^2] for z ~ N(0, 1)
        return math.sqrt(1.0 / second_moment)
    raise ValueError(
        f"nonlinearity={nonlinearity!r} is not supported; use one of "
        f"{sorted(_LINEAR + ('sigmoid', 'tanh', 'relu', 'leaky_relu', 'selu'))}"
    )


def _check_gain(gain: float) -> float:
    gain = float(gain)
    if not gain > 0.0:
        raise ValueError(f"gain must be > 0, got gain={gain!r}; see calculate_gain")
    return gain


def _fan(shape: Sequence[int], mode: str) -> int:
    fan_in, fan_out = fans(shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(
        f"mode must be 'fan_in' (preserve the forward variance) or 'fan_out' (the backward "
        f"one), got mode={mode!r}"
    )


def xavier_uniform(shape: Sequence[int], gain: float = 1.0):
    """``U(-a, a)`` with ``a = gain * sqrt(6 / (fan_in + fan_out))`` (Glorot & Bengio 2010, eq. 16).

    Its variance is ``gain^2 * 2 / (fan_in + fan_out)``.
    """
    fan_in, fan_out = fans(shape)
    a = _check_gain(gain) * math.sqrt(6.0 / (fan_in + fan_out))
    return stats.uniform(loc=-a, scale=2.0 * a)


def xavier_normal(shape: Sequence[int], gain: float = 1.0):
    """``N(0, std^2)`` with ``std = gain * sqrt(2 / (fan_in + fan_out))`` (not truncated)."""
    fan_in, fan_out = fans(shape)
    std = _check_gain(gain) * math.sqrt(2.0 / (fan_in + fan_out))
    return stats.norm(loc=0.0, scale=std)


def kaiming_uniform(
    shape: Sequence[int],
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
):
    """``U(-bound, bound)`` with ``bound = gain * sqrt(3 / fan)`` (He et al. 2015).

    ``gain = calculate_gain(nonlinearity, a)``: with torch's defaults (``a=0``, ``'leaky_relu'``)
    that is ``sqrt(2)``. The variance is ``gain^2 / fan``.
    """
    fan = _fan(shape, mode)
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return stats.uniform(loc=-bound, scale=2.0 * bound)


def kaiming_normal(
    shape: Sequence[int],
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
):
    """``N(0, std^2)`` with ``std = gain / sqrt(fan)`` (He et al. 2015; not truncated)."""
    fan = _fan(shape, mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return stats.norm(loc=0.0, scale=std)

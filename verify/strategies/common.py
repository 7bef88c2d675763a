"""Strategy helpers shared by every family: sizes, value laws, rounding to a storage dtype."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

# Sizes that hit the edges of vectorised loops: 1, powers of two and their neighbours.
_EDGE_SIZES = sorted(
    {
        1,
        2,
        3,
        5,
        7,
        8,
        9,
        15,
        16,
        17,
        31,
        32,
        33,
        63,
        64,
        65,
        127,
        128,
        129,
        255,
        256,
        257,
        511,
        512,
        513,
        1023,
        1024,
        1025,
    }
)


def sizes(*, min_value: int = 1, max_value: int) -> st.SearchStrategy[int]:
    """A size in [min_value, max_value], favouring 1 and 2^k +- 1."""
    if max_value < min_value:
        raise ValueError(f"max_value={max_value} < min_value={min_value}; widen the budget")
    edges = [s for s in _EDGE_SIZES if min_value <= s <= max_value] or [min_value]
    return st.one_of(st.sampled_from(edges), st.integers(min_value, max_value))


def _heavy_tail(rng, shape):
    # Student t with 2.5 degrees of freedom: finite variance, heavy tails.
    return rng.standard_t(2.5, size=shape)


def _outliers(rng, shape):
    z = rng.normal(size=shape)
    mask = rng.random(size=shape) < 1e-3
    return np.where(mask, z * 1e3, z)


def _constant_channels(rng, shape):
    # Every other channel has variance 0 (eps alone decides its output), beside normal ones.
    z = rng.normal(size=shape)
    z[:, ::2] = 0.0
    return z


#: Laws of the standardised values z; a case scales and shifts them per channel.
DISTRIBUTIONS = {
    "normal": lambda rng, shape: rng.normal(size=shape),
    "uniform": lambda rng, shape: rng.uniform(-1.7320508, 1.7320508, size=shape),
    "constant": _constant_channels,
    "heavy_tail": _heavy_tail,
    "outliers": _outliers,
    "near_float16_max": lambda rng, shape: rng.normal(size=shape),
}


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values rounded (to nearest) to ``dtype``, returned as float64."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).to(getattr(torch, dtype))
    return t.to(torch.float64).numpy()

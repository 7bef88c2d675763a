"""Strategy helpers shared by every family: sizes, value laws, rounding to a storage dtype."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

#: Powers of two up to 2^17 and their neighbours: where vectorised loops and tiles have edges.
EDGE_SIZES = sorted({1, 2, 3} | {v for k in range(2, 18) for v in (2**k - 1, 2**k, 2**k + 1)})


def sizes(*, min_value: int = 1, max_value: int) -> st.SearchStrategy[int]:
    """A size in [min_value, max_value], favouring 1, 2^k - 1, 2^k, 2^k + 1 and the largest."""
    if max_value < min_value:
        raise ValueError(f"max_value={max_value} < min_value={min_value}; widen the budget")
    edges = [s for s in EDGE_SIZES if min_value <= s <= max_value] + [max_value]
    return st.one_of(st.sampled_from(sorted(set(edges))), st.integers(min_value, max_value))


def banded_sizes(*, max_value: int, edges: tuple, min_value: int = 1) -> st.SearchStrategy[int]:
    """A size whose band (between ``edges``, as :func:`band` names them) is drawn first, evenly,
    then a size inside it by :func:`sizes`: a handful of examples reaches the largest band as
    often as the smallest, where a plain draw would sit near the small end."""
    bounds = [min_value, *[e + 1 for e in edges if min_value < e + 1 <= max_value]]
    ranges = [
        (lo, min(hi - 1, max_value))
        for lo, hi in zip(bounds, [*bounds[1:], max_value + 1], strict=True)
        if lo <= min(hi - 1, max_value)
    ]
    return evenly(ranges).flatmap(lambda r: sizes(min_value=r[0], max_value=r[1]))


def evenly(choices) -> st.SearchStrategy:
    """One of ``choices``, each as likely in a short run as in a long one. st.sampled_from
    favours its first element early in a run (Hypothesis starts simple: 40% of a 20-example run,
    measured), which would leave the last choices to chance; a uniform 32-bit selector does not
    (at the price of shrinking: the selector shrinks towards the first choice, not smoothly)."""
    choices = list(choices)
    return st.integers(0, 2**32 - 1).map(lambda k: choices[k % len(choices)])


def edge_class(n: int) -> str:
    """Where a size sits against a power of two (the coverage table's "edge" dimensions)."""
    if n == 1:
        return "1"
    if n & (n - 1) == 0:
        return "2^k"
    if (n + 1) & n == 0:
        return "2^k-1"
    if (n - 1) & (n - 2) == 0:
        return "2^k+1"
    return "other"


def band(value: float, edges: tuple) -> str:
    """The band of ``value`` between increasing integer ``edges``: "e0" (at most the first),
    "a-b" (above a - 1, at most b; "b" alone when a = b), "last+" beyond the last edge."""
    if value <= edges[0]:
        return f"{edges[0]}"
    for lo, hi in zip(edges, edges[1:], strict=False):
        if value <= hi:
            return f"{hi}" if lo + 1 == hi else f"{lo + 1}-{hi}"
    return f"{edges[-1] + 1}+"


def divisors(v: int) -> list[int]:
    """The divisors of ``v`` >= 1, increasing: sizes whose product is exactly ``v``."""
    small = [d for d in range(1, math.isqrt(v) + 1) if v % d == 0]
    return sorted({*small, *(v // d for d in small)})


def nearest_divisor(v: int, near: int) -> int:
    """The divisor of ``v`` closest to ``near`` (the smaller on a tie)."""
    return min(divisors(v), key=lambda d: (abs(d - near), d))


def band_range(label: str, edges: tuple) -> tuple[int, int]:
    """The integers :func:`band` names ``label`` (the last band open: up to 2^62)."""
    if label.endswith("+"):
        return int(label[:-1]), 2**62
    lo, _, hi = label.partition("-")
    if not hi and int(lo) == edges[0]:
        return 1, edges[0]
    return int(lo), int(hi or lo)


def reachable_bands(cap: int, edges: tuple, *, low: int = 1) -> tuple[str, ...]:
    """The bands of :func:`band` that sizes from ``low`` to ``cap`` fall in."""
    probes = [e for e in edges if low <= e <= cap] + [e + 1 for e in edges if e + 1 <= cap]
    return tuple(dict.fromkeys(band(p, edges) for p in sorted(probes)))


def log_band(value: float, edges: tuple) -> str:
    """The band of a positive ``value`` between increasing ``edges`` on a log scale."""
    if value <= edges[0]:
        return f"{edges[0]:g}"
    for lo, hi in zip(edges, edges[1:], strict=False):
        if value <= hi:
            return f"{lo:g}..{hi:g}"
    return f">{edges[-1]:g}"


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

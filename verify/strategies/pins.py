"""Pinning a coverage dimension: how the harness closes the gaps a search leaves.

A short search samples each dimension of the configuration space, but it does not reach every
value of every dimension (Hypothesis also explores around the cases it found, so a 20-case run
can spend most of its cases in one layout). After the search, the harness runs a few more cases
for each declared value no case reached, with that value pinned (verify.checks.base). A strategy
opts in by drawing the dimension with :func:`choose`; a dimension drawn otherwise is left to the
search, and its gaps stay flagged in the report.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

from hypothesis import strategies as st

from verify.strategies.common import band_range, evenly, reachable_bands, sizes

# A context variable rather than an argument threaded through every family's strategy: the
# pins are read at draw time, inside Hypothesis, by whichever composite draws the dimension.
_PINS: ContextVar[Mapping[str, str]] = ContextVar("varguard_pins", default=MappingProxyType({}))


# The dimensions drawn with :func:`choose` while a :func:`recording` block is open: the only
# ones pinning can steer. Recorded per search, not per process: two families may share a
# dimension's name ("x layout") and only one of them draw it with choose().
_CHOSEN: ContextVar[set[str] | None] = ContextVar("varguard_chosen", default=None)


@contextmanager
def recording() -> Iterator[set[str]]:
    """Within the block, the set yielded fills with the dimensions drawn with :func:`choose`."""
    chosen: set[str] = set()
    token = _CHOSEN.set(chosen)
    try:
        yield chosen
    finally:
        _CHOSEN.reset(token)


@contextmanager
def pinned(pins: Mapping[str, str]) -> Iterator[None]:
    """Within the block, :func:`choose` returns the pinned value of each dimension named."""
    token = _PINS.set(dict(pins))
    try:
        yield
    finally:
        _PINS.reset(token)


@st.composite
def choose(draw, dimension: str, options):
    """A value of the coverage dimension ``dimension``: the value pinned for it, if it is one of
    ``options``, else one drawn evenly (:func:`verify.strategies.common.evenly`).

    ``options`` is either labels (strings that are the values themselves, as layouts are) or a
    mapping from each coverage label to its value or to a strategy drawing values with that
    label (momentum "(0, 1)" -> floats strictly between)."""
    chosen = _CHOSEN.get()
    if chosen is not None:
        chosen.add(dimension)
    table = dict(options) if isinstance(options, Mapping) else {o: o for o in options}
    label = _PINS.get().get(dimension)
    if label not in table:
        label = draw(evenly(list(table)))
    value = table[label]
    return draw(value) if isinstance(value, st.SearchStrategy) else value


def pin(dimension: str) -> str | None:
    """The value pinned for ``dimension`` now, or None: for a strategy that draws the dimension
    in two steps (the gradient's layout follows the input's unless drawn on its own)."""
    return _PINS.get().get(dimension)


def chosen_band(dimension: str, *, edges: tuple, max_value: int, min_value: int = 1, inside=None):
    """A size whose band (:func:`verify.strategies.common.band` of ``edges``) is the coverage
    dimension ``dimension``, drawn with :func:`choose` (evenly, or the pinned band), then a size
    inside it by ``inside(lo, hi)`` (default :func:`verify.strategies.common.sizes`: its edges
    and its largest favoured)."""
    options = {}
    for label in reachable_bands(max_value, edges, low=min_value):
        lo, hi = band_range(label, edges)
        lo, hi = max(lo, min_value), min(hi, max_value)
        if lo <= hi:
            options[label] = (inside or _sizes_between)(lo, hi)
    return choose(dimension, options)


def _sizes_between(lo: int, hi: int):
    return sizes(min_value=lo, max_value=hi)

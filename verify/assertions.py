"""Comparing a computed array with its expected value under a per-element bound.

One template for every mismatch message (after torch/testing/_comparison.py): how many elements
broke the bound, the greatest absolute and relative error and where, and what was allowed there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from theory.rounding import overflow_threshold


@dataclass(frozen=True)
class Comparison:
    """The result of comparing ``actual`` with ``expected`` under ``allowed`` (per element)."""

    what: str
    bound: str  # the theory function or oracle the tolerance came from (describe_bound)
    count: int  # elements past the bound (NaN/Inf where expected is finite count too)
    total: int
    ratio: float  # max |error| / allowed; the check passes iff ratio <= 1
    worst_index: tuple[int, ...]
    worst_error: float
    worst_allowed: float
    max_abs: float
    max_abs_index: tuple[int, ...]
    max_rel: float
    max_rel_index: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return self.ratio <= 1.0

    def message(self) -> str:
        if self.ok:
            return (
                f"{self.what}: within bound ({self.bound}); worst error/allowed "
                f"{self.ratio:.3g} at index {self.worst_index}"
            )
        return (
            f"{self.what}: {self.count} of {self.total} elements exceed the bound ({self.bound}).\n"
            f"  worst error/allowed {self.ratio:.3g} at index {self.worst_index}: "
            f"|error| {self.worst_error:.3g}, allowed {self.worst_allowed:.3g}\n"
            f"  greatest absolute difference {self.max_abs:.3g} at index {self.max_abs_index}\n"
            f"  greatest relative difference {self.max_rel:.3g} at index {self.max_rel_index}"
        )


def compare(
    actual, expected, allowed, *, what: str, bound: Any, storage: str | None = None
) -> Comparison:
    """Compare element-wise. NaN or Inf in ``actual`` where ``expected`` is finite is an
    infinite error; matching non-finite values (same NaN or same infinity) count as exact.

    ``storage``: the dtype ``actual`` is stored in. A value computed within ``allowed`` of the
    exact one rounds to +-inf under IEEE 754 once it passes theory.rounding.overflow_threshold:
    where every value allowed is past it, the expected value is that infinity; where the
    allowed interval reaches it, that infinity is one of the results allowed, its error the
    distance from the exact value to the threshold (a finite result there is compared as usual).
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    bound = describe_bound(bound)
    if a.shape != e.shape:
        raise ShapeMismatch(f"{what}: shape {a.shape}, expected {e.shape}")
    tol = np.broadcast_to(np.asarray(allowed, dtype=np.float64), e.shape)
    to_infinity = np.zeros(e.shape, dtype=bool)
    distance_to_limit = np.zeros(e.shape)
    if storage is not None:
        limit = overflow_threshold(storage)
        with np.errstate(invalid="ignore", over="ignore"):
            finite = np.isfinite(e)
            e = np.where(finite & (np.abs(e) - tol >= limit), np.sign(e) * np.inf, e)
            to_infinity = (
                np.isfinite(e)
                & (np.abs(e) + tol >= limit)
                & np.isinf(a)
                & (np.sign(a) == np.sign(e))
            )
            distance_to_limit = np.maximum(limit - np.abs(e), 0.0)
    same_nonfinite = (~np.isfinite(e)) & ((np.isnan(a) & np.isnan(e)) | (a == e))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        err = np.where(same_nonfinite, 0.0, np.abs(a - e))
        err = np.where(to_infinity, distance_to_limit, err)
        err = np.where(np.isnan(err), np.inf, err)
        ratio = np.where(err == 0, 0.0, err / np.where(tol > 0, tol, 0.0))
        rel = np.where(err == 0, 0.0, err / np.abs(e))
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    if a.size == 0:
        return Comparison(what, bound, 0, 0, 0.0, (), 0.0, 0.0, 0.0, (), 0.0, ())
    iw = argmax_index(ratio)
    ia = argmax_index(err)
    ir = argmax_index(np.where(np.isnan(rel), np.inf, rel))
    return Comparison(
        what=what,
        bound=bound,
        count=int(np.count_nonzero(ratio > 1.0)),
        total=int(a.size),
        ratio=float(ratio[iw]),
        worst_index=iw,
        worst_error=float(err[iw]),
        worst_allowed=float(tol[iw]),
        max_abs=float(err[ia]),
        max_abs_index=ia,
        max_rel=float(rel[ir]),
        max_rel_index=ir,
    )


class ShapeMismatch(AssertionError):
    """The target returned an array of the wrong shape: never a tolerance question."""


def argmax_index(a: np.ndarray) -> tuple[int, ...]:
    """The index of the largest element (of a boolean array: the first True), as ints."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(a)), a.shape))


def input_changed(before: np.ndarray, after: np.ndarray, where: str) -> str | None:
    """Why ``after`` is not ``before`` bit for bit (NaN matching NaN), or None if unchanged: the
    message of the no-mutation checks."""
    diff = ~((after == before) | (np.isnan(before) & np.isnan(after)))
    if not diff.any():
        return None
    return (
        f"{where} changed {int(diff.sum())} of {before.size} input elements, first at "
        f"{argmax_index(diff)}"
    )


def worst(*comparisons: Comparison) -> Comparison:
    """The comparison with the largest error/allowed ratio."""
    return max(comparisons, key=lambda c: c.ratio)


# --- naming a bound -------------------------------------------------------------------------


class _Exact:
    """The bound of a check that compares bit for bit (no rounding model involved)."""

    def __repr__(self) -> str:
        return "EXACT"


EXACT = _Exact()


@dataclass(frozen=True)
class Times:
    """``factor`` x a bound: e.g. two outputs each within ``bound`` of their exact values."""

    factor: float
    bound: Any


def describe_bound(bound: Any) -> str:
    """The text a result shows for ``bound``: a theory function by its dotted name, an oracle by
    its name, EXACT, Times(k, b), or a tuple of these (joined with +). Anything else is refused,
    so that a bound is always one of theory's objects, never free text typed twice."""
    if bound is EXACT:
        return "exact"
    if isinstance(bound, Times):
        return f"{bound.factor:g} x {describe_bound(bound.bound)}"
    if isinstance(bound, tuple) and bound:
        return " + ".join(describe_bound(b) for b in bound)
    name = getattr(bound, "name", None)
    if isinstance(name, str) and hasattr(bound, "expr"):  # a theory.oracle.Oracle
        return f"oracle {name}"
    module, qualname = getattr(bound, "__module__", None), getattr(bound, "__qualname__", None)
    if callable(bound) and module and qualname:
        return f"{module}.{qualname}"
    raise TypeError(
        f"bound={bound!r}: give the theory function or oracle the tolerance comes from, EXACT, "
        f"Times(k, bound) or a tuple of these"
    )

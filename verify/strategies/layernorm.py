"""LayerNorm cases: the row-normalisation cases of verify/strategies/rows.py for a centred norm
(kappa, LayerNorm's bias switch, eps a number)."""

from __future__ import annotations

from hypothesis import strategies as st

from verify.strategies import rows
from verify.strategies.rows import RowCase
from verify.targets.base import Target

KIND = "layer"


def cases(*, target: Target, max_elements: int) -> st.SearchStrategy[RowCase]:
    return rows.row_cases(target=target, kind=KIND, max_elements=max_elements)


def dimensions(target: Target, *, max_elements: int) -> dict[str, tuple[str, ...]]:
    return rows.dimensions(target, kind=KIND, max_elements=max_elements)


__all__ = ["KIND", "RowCase", "cases", "dimensions"]

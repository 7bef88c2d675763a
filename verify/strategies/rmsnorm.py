"""RMSNorm cases: the row-normalisation cases of verify/strategies/rows.py for a norm without
centring (no bias; eps may be None, torch's documented default finfo(opmath type).eps)."""

from __future__ import annotations

from hypothesis import strategies as st

from verify.strategies import rows
from verify.strategies.rows import RowCase
from verify.targets.base import Target

KIND = "rms"


def cases(*, target: Target, max_elements: int) -> st.SearchStrategy[RowCase]:
    return rows.row_cases(target=target, kind=KIND, max_elements=max_elements)


def dimensions(target: Target, *, max_elements: int) -> dict[str, tuple[str, ...]]:
    return rows.dimensions(target, kind=KIND, max_elements=max_elements)


__all__ = ["KIND", "RowCase", "cases", "dimensions"]

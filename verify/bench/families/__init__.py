"""Each family's benchmark, declared once: ``BENCH`` (a :class:`FamilyBench`) in this package's
module named after the family (verify/families.py), discovered, in FAMILIES order. A family
without such a module is not benchmarked. Free of torch: the parser and the report read it."""

from __future__ import annotations

from functools import lru_cache

from verify.bench.families.base import FamilyBench, Op, Size
from verify.families import discover


@lru_cache(maxsize=1)
def benches() -> dict[str, FamilyBench]:
    """{family: its FamilyBench}, in FAMILIES order."""
    modules = discover(
        __name__, __path__, declares=lambda m: isinstance(getattr(m, "BENCH", None), FamilyBench)
    )
    return {m.BENCH.family: m.BENCH for m in modules}


def bench_of(family: str) -> FamilyBench:
    try:
        return benches()[family]
    except KeyError:
        raise ValueError(
            f"family={family!r} declares no benchmark; bench times {', '.join(benches())}"
        ) from None


def all_ops() -> dict[str, str]:
    """Every operation name some family times, with the first family's description of it."""
    out: dict[str, str] = {}
    for bench in benches().values():
        for op in bench.ops:
            out.setdefault(op.name, op.what)
    return out


__all__ = ["FamilyBench", "Op", "Size", "all_ops", "bench_of", "benches"]

"""The configuration-coverage table: per target, every dimension a kernel can branch on, the
values the cases reached (how many ran and passed in each), and the values the family declares
reachable that no case reached (flagged). Built from the results' own tallies
(Result.extra["coverage"] and ["declared"], written by run_check); nothing is measured here.
"""

from __future__ import annotations


def build(entries: list[dict]) -> dict:
    """{target: {"dimensions": {dim: {value: {"cases": n, "passed": n}}}, "unreached": {dim:
    [values]}}} from report entries; targets without tallies are left out."""
    tables: dict[str, dict] = {}
    for e in entries:
        extra = e.get("extra") or {}
        tally = extra.get("coverage")
        if not tally:
            continue
        table = tables.setdefault(e["target"], {"dimensions": {}, "declared": {}})
        for dim, values in tally.items():
            cells = table["dimensions"].setdefault(dim, {})
            for value, (ran, passed) in values.items():
                cell = cells.setdefault(value, {"cases": 0, "passed": 0})
                cell["cases"] += ran
                cell["passed"] += passed
        for dim, values in (extra.get("declared") or {}).items():
            known = table["declared"].setdefault(dim, [])
            known += [v for v in values if v not in known]
    for table in tables.values():
        declared = table.pop("declared")
        table["unreached"] = {
            dim: missing
            for dim, values in declared.items()
            if (missing := [v for v in values if v not in table["dimensions"].get(dim, {})])
        }
        for dim in declared:  # a declared dimension no case named at all is unreached too
            table["dimensions"].setdefault(dim, {})
    return tables


def rows(table: dict) -> list[tuple[str, str, str]]:
    """(dimension, values reached with cases/passed, values not reached) for a target's table."""
    out = []
    for dim, cells in table["dimensions"].items():
        reached = ", ".join(
            f"{value} ({c['cases']}" + (f", {c['cases'] - c['passed']} failed)" if c["passed"]
                                          < c["cases"] else ")")
            for value, c in cells.items()
        )  # fmt: skip
        out.append((dim, reached or "-", ", ".join(table["unreached"].get(dim, []))))
    return out


def unreached_count(table: dict) -> int:
    return sum(len(v) for v in table["unreached"].values())


__all__ = ["build", "rows", "unreached_count"]

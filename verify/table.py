"""Plain-text tables for the terminal."""

from __future__ import annotations

from verify.result import Result


def ratio_str(r: float | None) -> str:
    return "-" if r is None else f"{r:.3g}"


def format_row(r: Result) -> str:
    return (
        f"{r.target:28s} {r.check:30s} {r.status:7s} {ratio_str(r.worst_ratio):>9s} "
        f"{r.examples:5d} {r.seconds:7.1f}s"
    )


HEADER = f"{'target':28s} {'check':30s} {'status':7s} {'worst':>9s} {'cases':>5s} {'time':>8s}"

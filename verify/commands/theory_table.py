"""Render theory's oracles as a Markdown, JSON or LaTeX table (`varguard theory`)."""

from __future__ import annotations

import json

from theory import all_oracles
from theory.oracle import Oracle

FORMATS = ("markdown", "json", "latex")


def render(fmt: str = "markdown", *, digits: int = 16, oracles: list[Oracle] | None = None) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is not one of {FORMATS}")
    oracles = all_oracles() if oracles is None else oracles
    return {"markdown": _markdown, "json": _json, "latex": _latex}[fmt](oracles, digits)


def _json(oracles: list[Oracle], digits: int) -> str:
    return json.dumps({o.name: o.to_json(digits=max(digits, 30)) for o in oracles}, indent=2)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(oracles: list[Oracle], digits: int) -> str:
    lines = ["| oracle | value | formula | source |", "|---|---|---|---|"]
    for o in oracles:
        formula = str(o.expr) if len(str(o.expr)) <= 80 else str(o.expr)[:77] + "..."
        lines.append(
            f"| {o.name} | {_cell(o.value_str(digits))} | `{_cell(formula)}` | {_cell(o.source)} |"
        )
    return "\n".join(lines)


def _latex(oracles: list[Oracle], digits: int) -> str:
    def esc(s: str) -> str:
        for a, b in (
            ("\\", r"\textbackslash{}"),
            ("&", r"\&"),
            ("%", r"\%"),
            ("_", r"\_"),
            ("#", r"\#"),
        ):
            s = s.replace(a, b)
        return s

    rows = [
        f"{esc(o.name)} & {esc(o.value_str(digits))} & ${o.latex}$ & {esc(o.source)} \\\\"
        for o in oracles
    ]
    return "\n".join(
        [
            r"\begin{longtable}{llll}",
            r"oracle & value & formula & source \\",
            r"\hline",
            *rows,
            r"\end{longtable}",
        ]
    )

"""The kernel benchmarks in the verification report: read REPORT/bench/ (pytest-benchmark JSON as
``varguard bench`` annotates it) and render the bandwidth ratios in Markdown and HTML.

Benchmarks are measurements, not checks: they add no result to the summary, except an error when
the bench stage crashed. ``bench.json`` stays the machine-readable record (``--compare`` reads it);
report.json keeps one row per timed operation, with its family. Markdown and HTML show one table
per family with a benchmark (verify/bench/families/), in FAMILIES order: no family is special.
"""

from __future__ import annotations

import json
from pathlib import Path

from verify.bench.families import benches
from verify.bench.results import JSON_NAME, OLD_FAMILY, family_of, load
from verify.report.plots import plt, png
from verify.report.tags import esc as escape
from verify.report.tags import image
from verify.stages.base import read_record, unfinished_result

FOLDER = "bench"
OUTPUT = JSON_NAME
ROW_KEYS = (
    "family",
    "op",
    "target",
    "dtype",
    "shape",
    "time_s",
    "time_stat",
    "bytes",
    "gbps",
    "copy_gbps",
    "bandwidth_ratio",
    "reference",
    "speedup_vs_reference",
)


def collect(out: Path) -> dict | None:
    """report.json's "bench": the stage record and one row per timed operation; None if absent."""
    folder = Path(out) / FOLDER
    stage = read_record(folder)
    try:
        data = load(folder)
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        data = None
    if stage is None and data is None:
        return None
    if data is None:
        return {"folder": FOLDER, "status": (stage or {}).get("status", "crashed"), "stage": stage}
    rows = []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("kind") != "op":
            continue
        row = {k: info.get(k) for k in ROW_KEYS}
        row["family"] = family_of(info)
        bench = benches().get(row["family"])
        row["layer"] = bench.label(info["shape"]) if bench else "custom"
        rows.append(row)
    own = data.get("varguard", {})
    # A bench.json from before the other families names batch norm's reference alone.
    references = own.get("references") or (
        {OLD_FAMILY: own["reference"]} if own.get("reference") else {}
    )
    return {
        "folder": FOLDER,
        "status": "finished",
        "stage": stage,
        "command": (stage or {}).get("command") or " ".join(own.get("meta", {}).get("argv", [])),
        "device": own.get("meta", {}).get("device"),
        "references": references,
        "reference": own.get("reference"),  # one family's run: its reference (older readers)
        "notes": own.get("notes", []),
        "not_benchmarked": own.get("skipped", []),
        "rows": rows,
    }


def results(section: dict | None) -> list[dict]:
    """A result standing for a bench stage that wrote nothing (crashed, or skipped)."""
    if section is None or section["status"] == "finished":
        return []
    return [unfinished_result(FOLDER, OUTPUT, section.get("stage"))]


# --- rendering ----------------------------------------------------------------------------------

HEADER = (
    "operation",
    "shape",
    "size",
    "target",
    "dtype",
    "time (ms)",
    "GB/s",
    "ratio to copy",
    "vs reference",
)


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _header(family: str) -> tuple[str, ...]:
    """HEADER with the family's own names for a shape's axes and for its sizes."""
    bench = benches()[family]
    return (HEADER[0], f"shape ({bench.axes})", bench.size_column, *HEADER[3:])


def _families(section: dict) -> list[str]:
    """The families with rows, in FAMILIES order (a family unknown here is left out)."""
    present = {r.get("family", OLD_FAMILY) for r in section["rows"]}
    return [f for f in benches() if f in present]


def _rows(section: dict, family: str) -> list[tuple[str, ...]]:
    bench = benches()[family]
    reference = section.get("references", {}).get(family)
    order = {op: i for i, op in enumerate(bench.op_names)}
    mine = [r for r in section["rows"] if r.get("family", OLD_FAMILY) == family]
    rows = sorted(
        mine,
        key=lambda r: (
            order.get(r["op"], 99),
            bench.order(r["shape"]),
            r["target"] != reference,
            r["target"],
        ),
    )
    return [
        (
            r["op"],
            "x".join(map(str, r["shape"])),
            r["layer"],
            r["target"],
            r["dtype"],
            f"{r['time_s'] * 1e3:.4g}",
            _fmt(r["gbps"], ".3g"),
            _fmt(r["bandwidth_ratio"], ".3g"),
            _fmt(r["speedup_vs_reference"], ".3g"),
        )
        for r in rows
    ]


def _title(section: dict, family: str) -> str:
    reference = section.get("references", {}).get(family) or "-"
    return f"{family} (reference {reference})"


def _intro(section: dict) -> list[str]:
    if section["status"] != "finished":
        return [f"The bench stage did not finish: {section['status']} (see the results)."]
    return [
        f"Command: `{section['command']}`. Minimum bytes: each input read once, each output "
        "written once; ratio to copy = achieved GB/s over a `y.copy_(x)` of as many bytes timed "
        "in the same run; vs reference = the family's reference target's time / this time. "
        f"Full tables: {section['folder']}/bench.md; pytest-benchmark JSON: {section['folder']}/"
        "bench.json.",
        *section["notes"],
    ]


def markdown(section: dict | None) -> list[str]:
    if section is None:
        return []
    lines = ["## Kernel benchmarks", "", *(f"- {n}" for n in _intro(section)), ""]
    if section["status"] != "finished":
        return lines
    for family in _families(section):
        lines += [f"### {_title(section, family)}", ""]
        lines += ["| " + " | ".join(_header(family)) + " |", "|" + "---|" * 5 + "---:|" * 4]
        lines += ["| " + " | ".join(row) + " |" for row in _rows(section, family)]
        lines.append("")
    if section["not_benchmarked"]:
        lines += [f"{len(section['not_benchmarked'])} (target, operation) pairs not benchmarked:"]
        lines += [f"- {s['target']} {s['op']}: {s['why']}" for s in section["not_benchmarked"]]
        lines.append("")
    return lines


def html(section: dict | None, folder: Path | None = None) -> list[str]:
    if section is None:
        return []
    plot_png = bench_ratios(section["rows"]) if section["status"] == "finished" else None
    out = ["<h2>Kernel benchmarks</h2>", "<ul>"]
    out += [f"<li>{escape(n)}</li>" for n in _intro(section)] + ["</ul>"]
    if section["status"] != "finished":
        return out
    out.append(image(plot_png, "achieved bandwidth as a fraction of a copy's"))
    for family in _families(section):
        out.append(f"<h3>{escape(_title(section, family))}</h3>")
        out.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in _header(family)))
        out[-1] += "</tr>"
        for row in _rows(section, family):
            cells = "".join(
                f'<td class="num">{escape(v)}</td>' if i >= 5 else f"<td>{escape(v)}</td>"
                for i, v in enumerate(row)
            )
            out.append(f"<tr>{cells}</tr>")
        out.append("</table>")
    if section["not_benchmarked"]:
        out.append("<p>Not benchmarked:</p><ul>")
        out += [
            f"<li>{escape(s['target'])} {escape(s['op'])}: {escape(s['why'])}</li>"
            for s in section["not_benchmarked"]
        ]
        out.append("</ul>")
    return out


__all__ = ["FOLDER", "collect", "html", "markdown", "results"]


def bench_ratios(rows: list[dict]) -> bytes | None:
    """One row of panels per family, one panel per operation: achieved bandwidth over a
    same-run copy's, per size (the network's order), one colour per target across panels; 1 is
    the bandwidth limit."""
    rows = [r for r in rows if r.get("bandwidth_ratio")]
    if not rows:
        return None
    families = [f for f in benches() if any(r.get("family", OLD_FAMILY) == f for r in rows)]
    panels = {
        f: list(dict.fromkeys(r["op"] for r in rows if r.get("family", OLD_FAMILY) == f))
        for f in families
    }
    ncols = max(len(ops) for ops in panels.values())
    colours = {t: f"C{i % 10}" for i, t in enumerate(dict.fromkeys(r["target"] for r in rows))}
    fig, axes = plt.subplots(
        len(families), ncols, figsize=(4.2 * ncols, 3.4 * len(families)), squeeze=False
    )
    for row_axes, family in zip(axes, families, strict=True):
        bench = benches()[family]
        for ax in row_axes[len(panels[family]) :]:
            ax.set_visible(False)
        for ax, op in zip(row_axes, panels[family], strict=False):
            mine = [r for r in rows if r.get("family", OLD_FAMILY) == family and r["op"] == op]
            shapes = sorted({tuple(r["shape"]) for r in mine}, key=bench.order)
            xs = {s: i for i, s in enumerate(shapes)}
            for target in dict.fromkeys(r["target"] for r in mine):
                pts = sorted((xs[tuple(r["shape"])], r["bandwidth_ratio"]) for r in mine
                             if r["target"] == target)  # fmt: skip
                ax.plot(*zip(*pts, strict=True), "o-", color=colours[target], markersize=4)
            ax.axhline(1.0, color="k", linestyle="--", linewidth=1)
            ax.set_xticks(range(len(shapes)))
            ax.set_xticklabels(["x".join(map(str, s)) for s in shapes], rotation=30, fontsize=7)
            ax.set_yscale("log")
            ax.set_title(f"{family} {op}", fontsize=10)
            ax.set_xlabel(bench.axes)
            ax.grid(alpha=0.3, which="both")
        row_axes[0].set_ylabel("GB/s / copy GB/s")
    handles = [plt.Line2D([], [], color=c, marker="o", label=t) for t, c in colours.items()]
    handles.append(plt.Line2D([], [], color="k", linestyle="--", label="copy (the limit)"))
    legend_rows = 1 + len(handles) // 5
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8,
               bbox_to_anchor=(0.5, 0.0))  # fmt: skip
    fig.tight_layout(rect=(0, 0.35 * legend_rows / (3.4 * len(families)) + 0.03, 1, 1))
    return png(fig)

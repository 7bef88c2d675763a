"""The kernel benchmarks in the verification report: read REPORT/bench/ (pytest-benchmark JSON as
``varguard bench`` annotates it) and render the bandwidth ratios in Markdown and HTML.

Benchmarks are measurements, not checks: they add no result to the summary, except an error when
the bench stage crashed. ``bench.json`` stays the machine-readable record (``--compare`` reads it);
report.json keeps one row per timed operation.
"""

from __future__ import annotations

import json
from pathlib import Path

from verify.bench.layers import OPS, layer_name
from verify.bench.results import JSON_NAME, load
from verify.report.plots import plt, png
from verify.report.tags import esc as escape
from verify.report.tags import image
from verify.stages.base import read_record, unfinished_result

FOLDER = "bench"
OUTPUT = JSON_NAME
ROW_KEYS = (
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
        row["layer"] = layer_name(info["shape"])
        rows.append(row)
    own = data.get("varguard", {})
    return {
        "folder": FOLDER,
        "status": "finished",
        "stage": stage,
        "command": (stage or {}).get("command") or " ".join(own.get("meta", {}).get("argv", [])),
        "device": own.get("meta", {}).get("device"),
        "reference": own.get("reference"),
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
    "shape (N, C, H, W)",
    "layer",
    "target",
    "dtype",
    "time (ms)",
    "GB/s",
    "ratio to copy",
    "vs reference",
)


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _rows(section: dict) -> list[tuple[str, ...]]:
    order = {op: i for i, op in enumerate(OPS)}
    rows = sorted(
        section["rows"],
        key=lambda r: (
            order.get(r["op"], 99),
            -r["shape"][2] * r["shape"][3],
            r["shape"][1],
            r["target"] != section.get("reference"),
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


def _intro(section: dict) -> list[str]:
    if section["status"] != "finished":
        return [f"The bench stage did not finish: {section['status']} (see the results)."]
    return [
        f"Command: `{section['command']}`. Minimum bytes: each input read once, each output "
        "written once; ratio to copy = achieved GB/s over a `y.copy_(x)` of as many bytes timed "
        f"in the same run; vs reference = {section.get('reference')} time / this time. Full "
        f"tables: {section['folder']}/bench.md; pytest-benchmark JSON: {section['folder']}/"
        "bench.json.",
        *section["notes"],
    ]


def markdown(section: dict | None) -> list[str]:
    if section is None:
        return []
    lines = ["## Kernel benchmarks", "", *(f"- {n}" for n in _intro(section)), ""]
    if section["status"] != "finished":
        return lines
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * 5 + "---:|" * 4]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(section)]
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
    out.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in HEADER) + "</tr>")
    for row in _rows(section):
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
    """One panel per benchmarked operation: achieved bandwidth over a same-run copy's, per layer
    size (network order), one colour per target across panels; 1 is the bandwidth limit."""
    rows = [r for r in rows if r.get("bandwidth_ratio")]
    if not rows:
        return None
    ops = list(dict.fromkeys(r["op"] for r in rows))
    colours = {t: f"C{i % 10}" for i, t in enumerate(dict.fromkeys(r["target"] for r in rows))}
    fig, axes = plt.subplots(1, len(ops), figsize=(4.2 * len(ops), 3.6), squeeze=False)
    for ax, op in zip(axes[0], ops, strict=True):
        mine = [r for r in rows if r["op"] == op]
        shapes = sorted({tuple(r["shape"]) for r in mine}, key=lambda s: (-s[2] * s[3], s[1], s[0]))
        xs = {s: i for i, s in enumerate(shapes)}
        for target in dict.fromkeys(r["target"] for r in mine):
            pts = sorted((xs[tuple(r["shape"])], r["bandwidth_ratio"]) for r in mine
                         if r["target"] == target)  # fmt: skip
            ax.plot(*zip(*pts, strict=True), "o-", color=colours[target], markersize=4)
        ax.axhline(1.0, color="k", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels(["x".join(map(str, s[1:])) for s in shapes], rotation=30, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(op, fontsize=10)
        ax.set_xlabel("C x H x W")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("GB/s / copy GB/s")
    handles = [plt.Line2D([], [], color=c, marker="o", label=t) for t, c in colours.items()]
    handles.append(plt.Line2D([], [], color="k", linestyle="--", label="copy (the limit)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8,
               bbox_to_anchor=(0.5, -0.02))  # fmt: skip
    fig.tight_layout(rect=(0, 0.12 + 0.04 * (len(handles) // 5), 1, 1))
    return png(fig)

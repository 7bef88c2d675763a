"""The depth experiments in the verification report: read REPORT/depth/depth.json and draw the
measured values against the theory's curves. Measurements, not checks: they add no result to the
summary, except an error when the stage crashed."""

from __future__ import annotations

import math
from pathlib import Path

from verify.report.plots import plt, png
from verify.report.tags import esc, image
from verify.stages.base import read_json, read_record, unfinished_result

FOLDER = "depth"
OUTPUT = "depth.json"

PANELS = (
    (
        "Forward variance against depth",
        ("xavier_relu", "he_relu", "lecun_selu", "bn_relu"),
        "layer l",
        "E[h_l^2]",
    ),
    ("Residual stream variance", ("residual_bn", "residual_plain"), "blocks L", "E[x_L^2]"),
    (
        "Squared gradient norm, k layers below the output",
        ("grad_plain_bn_relu", "grad_residual_bn"),
        "k",
        "|g_(D-k)|^2 / |g_D|^2",
    ),
)


def collect(out: Path) -> dict | None:
    """report.json's "depth": the stage record and depth.json; None if absent."""
    folder = Path(out) / FOLDER
    stage = read_record(folder)
    data = read_json(folder / OUTPUT)
    if stage is None and data is None:
        return None
    status = "finished" if data is not None else (stage or {}).get("status", "crashed")
    return {"folder": FOLDER, "status": status, "stage": stage, "data": data}


def results(section: dict | None) -> list[dict]:
    if section is None or section["data"] is not None:
        return []
    return [unfinished_result(FOLDER, OUTPUT, section["stage"])]


def max_factor(measured: list[float], predicted: list[float]) -> float:
    """The largest max(m/t, t/m) over depths: how far the measurement strays from the theory."""
    worst = 1.0
    for m, t in zip(measured, predicted, strict=True):
        if m > 0 and t > 0:
            worst = max(worst, m / t, t / m)
        else:
            return math.inf
    return worst


def _rows(data: dict) -> list[tuple[str, ...]]:
    return [
        (
            c["title"],
            c["theory"],
            str(c["x"][-1]),
            f"{c['measured'][-1]:.4g}",
            f"{c['predicted'][-1]:.4g}",
            f"{max_factor(c['measured'], c['predicted']):.3g}",
        )
        for c in data["curves"].values()
    ]


HEADER = (
    "curve",
    "theory",
    "depth D",
    "measured at D",
    "theory at D",
    "largest factor off, any depth",
)


def _intro(section: dict) -> str:
    data = section["data"]
    if data is None:
        return f"The depth stage did not finish: {section['status']} (see the results)."
    return (
        f"torch modules and initialisers (width {data['width']}, batch {data['batch']}, seed "
        f"{data['seed']}, float32, CPU) against the curves the theory package derives (lines). "
        "Variances are second moments pooled over batch and units."
    )


def markdown(section: dict | None) -> list[str]:
    if section is None:
        return []
    lines = ["## Depth: measured against the theory", "", _intro(section), ""]
    if section["data"] is None:
        return lines
    lines += ["| " + " | ".join(HEADER) + " |", "|---|---|" + "---:|" * 4]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(section["data"])]
    return [*lines, ""]


def html(section: dict | None, folder: Path | None = None) -> list[str]:
    if section is None:
        return []
    out = [
        "<h2>Depth: measured against the theory</h2>",
        f'<p class="note">{esc(_intro(section))}</p>',
    ]
    data = section["data"]
    if data is None:
        return out
    out.append(image(depth_curves(data["curves"]), "depth curves: measured against theory"))
    out.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in HEADER) + "</tr>")
    for row in _rows(data):
        cells = "".join(
            f'<td class="num">{esc(v)}</td>' if i >= 2 else f"<td>{esc(v)}</td>"
            for i, v in enumerate(row)
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return out


def depth_curves(curves: dict[str, dict]) -> bytes:
    """Three log-scale panels: measured values as markers, the theory's curve as a line of the
    same colour."""
    fig, axes = plt.subplots(1, 3, figsize=(15.0, 4.6))
    for ax, (title, names, xlabel, ylabel) in zip(axes, PANELS, strict=True):
        for i, name in enumerate(n for n in names if n in curves):
            c = curves[name]
            colour = f"C{i}"
            label = c["title"].split(":")[0]
            ax.plot(c["x"], c["predicted"], color=colour, linewidth=1.5, alpha=0.7)
            ax.plot(c["x"], c["measured"], "o", color=colour, markersize=3.5, label=label)
        ax.plot([], [], color="grey", linewidth=1.5, label="theory (line)")
        ax.plot([], [], "o", color="grey", markersize=3.5, label="measured (torch)")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png(fig)

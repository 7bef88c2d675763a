"""The convergence job in the verification report: read REPORT/converge/, hand over its gated
results, and render its section (the arms, the controls, the curves) in Markdown and HTML.

``converge/`` is written by ``varguard run`` (the converge stage) or by hand with
``varguard converge --out REPORT/converge``; ``varguard report REPORT`` then re-renders.
Gated checks (targets and the reference) are results of family "converge"
(verify.converge.results), so the summary, the exit code and the gate count them; the controls
are reported, not gated, as in converge.
"""

from __future__ import annotations

from pathlib import Path

from verify.converge.results import find_check, gated_results
from verify.report.tags import esc as escape
from verify.report.tags import image
from verify.stages.base import read_json, read_record, unfinished_result

FOLDER = "converge"
OUTPUT = "converge.json"
PLOTS = (
    ("accuracy.png", "held-out accuracy per epoch"),
    ("loss.png", "training loss per epoch"),
    ("test_loss.png", "held-out loss per epoch"),
    ("stream.png", "residual stream at init against theory"),
)


def results(section: dict | None) -> list[dict]:
    """The job's gated results: as converge.json stores them, else (a file from before it
    stored them) derived from its runs; an error or skip when the job wrote nothing."""
    if section is None:
        return []
    data = section["data"]
    if data is None:
        return [unfinished_result(FOLDER, OUTPUT, section["stage"])]
    return data["results"] if "results" in data else gated_results(data)


def collect(out: Path) -> dict | None:
    """report.json's "converge": the stage record, converge.json, the plots; None if absent."""
    folder = Path(out) / FOLDER
    stage = read_record(folder)
    data = read_json(folder / OUTPUT)
    if stage is None and data is None:
        return None
    if data is not None:
        status = data.get("status", "failed")
    else:
        status = stage.get("status", "crashed") if stage else "crashed"
    return {
        "folder": FOLDER,
        "status": status,  # passed / failed (the job's verdict), skipped, crashed
        "stage": stage,
        "plots": [name for name, _ in PLOTS if (folder / name).exists()],
        "data": data,
    }


# --- rendering ----------------------------------------------------------------------------------


def _title(section: dict) -> str:
    model = (section["data"] or {}).get("config", {}).get("model", "resnet50")
    return f"Convergence: {model} trained with each target's batch norm"


def _headline(section: dict) -> str:
    data = section["data"]
    if data is None:
        return f"The convergence job did not finish: {section['status']} (see the results)."
    cfg, env = data["config"], data["environment"]
    return (
        f"{cfg['model']} on {cfg['data']}, {cfg['epochs']} epochs, seeds {cfg['first_seed']}.."
        f"{cfg['first_seed'] + cfg['seeds'] - 1}, held-out accuracy threshold "
        f"{cfg['threshold']:.1%}, t-test alpha {cfg['alpha']:g}; {env['device']} x "
        f"{env['world_size']}, torch {env['torch']}; {data['wall_s']:.0f} s. "
        f"Verdict: {data['status']}."
    )


def _arm_rows(data: dict) -> list[tuple[str, ...]]:
    rows = []
    for a in data["arms"]:
        comparison = a.get("comparison") or {}
        p = (comparison.get("values") or {}).get("p")
        rows.append(
            (
                a["name"],
                a["role"],
                a["status"],
                " ".join(f"{v:.1%}" for v in a["final_acc"]) or "-",
                " ".join("-" if e is None else str(e) for e in a["epochs_to_threshold"]) or "-",
                "-" if p is None else f"{p:.3g}",
                f"{a['wall_s']:.0f}",
                f"{a['images_per_s']:.0f}",
            )
        )
    return rows


ARM_HEADER = (
    "arm",
    "role",
    "status",
    "final accuracy (per seed)",
    "epochs to threshold",
    "t-test p",
    "wall (s)",
    "images/s",
)


def _notes(data: dict) -> list[str]:
    notes = [f"control: {c}" for c in data.get("controls", [])]
    ref = next((r for r in data["runs"] if r["role"] == "reference"), None)
    if ref:
        notes += [
            f"at init (reference seed {ref['seed']}): {name}: {c['message']}"
            for name in ("init.loss", "init.stream")
            if (c := find_check(ref, name))
        ]
    if data.get("bench"):
        notes.append(f"training-loop overhead: {data['bench']['message']}")
    return notes


def markdown(section: dict | None) -> list[str]:
    if section is None:
        return []
    lines = [f"## {_title(section)}", "", _headline(section), ""]
    data = section["data"]
    if data is None:
        return lines
    lines += ["| " + " | ".join(ARM_HEADER) + " |", "|" + "---|" * len(ARM_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in _arm_rows(data)]
    lines += ["", *(f"- {n}" for n in _notes(data)), ""]
    for name, alt in PLOTS:
        if name in section["plots"]:
            lines += [f"![{alt}]({section['folder']}/{name})", ""]
    return lines


def html(section: dict | None, folder: Path | None) -> list[str]:
    if section is None:
        return []
    out = [f"<h2>{escape(_title(section))}</h2>", f"<p>{escape(_headline(section))}</p>"]
    data = section["data"]
    if data is None:
        return out
    out.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in ARM_HEADER) + "</tr>")
    for row in _arm_rows(data):
        cells = "".join(
            f'<td class="st-{escape(v)}">{escape(v)}</td>' if i == 2 else f"<td>{escape(v)}</td>"
            for i, v in enumerate(row)
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    out += ["<ul>", *(f"<li>{escape(n)}</li>" for n in _notes(data)), "</ul>"]
    for name, alt in PLOTS:
        path = None if folder is None else Path(folder) / section["folder"] / name
        if path is not None and path.exists():
            out.append(image(path.read_bytes(), alt))
    return out


__all__ = ["FOLDER", "OUTPUT", "collect", "html", "markdown", "results"]

"""The convergence job in the verification report: read REPORT/converge/, turn its gated checks into
report results, and render its section (the arms, the controls, the curves) in Markdown and HTML.

``converge/`` is written by ``varguard run`` (the converge stage) or by hand with
``varguard converge --out REPORT/converge``; ``varguard report REPORT`` then re-renders.
Gated checks (targets and the reference) become results of family "converge", so the summary,
the exit code and the gate count them; the controls are reported, not gated, as in converge.
"""

from __future__ import annotations

from pathlib import Path

from verify.checks.base import CheckResult
from verify.report.tags import esc as escape
from verify.report.tags import image
from verify.stages import OUTPUT, STAGE_FILE, read_json, unfinished_result

FOLDER = "converge"
FAMILY = "converge"
PLOTS = (
    ("accuracy.png", "held-out accuracy per epoch"),
    ("loss.png", "training loss per epoch"),
    ("test_loss.png", "held-out loss per epoch"),
    ("stream.png", "residual stream at init against theory"),
)
GATED = ("target", "reference")


def collect(out: Path) -> dict | None:
    """report.json's "converge": the stage record, converge.json, the plots; None if absent."""
    folder = Path(out) / FOLDER
    stage = read_json(folder / STAGE_FILE)
    data = read_json(folder / OUTPUT["converge"])
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


def results(section: dict | None) -> list[dict]:
    """Result records (as in results.jsonl) for the gated checks of the job."""
    if section is None:
        return []
    data = section["data"]
    if data is None:
        return [unfinished_result("converge", section["stage"])]
    runs_by_arm: dict[str, list[dict]] = {}
    for run in data["runs"]:
        runs_by_arm.setdefault(run["arm"], []).append(run)
    out = []
    for arm in data["arms"]:
        if arm["role"] not in GATED:
            continue
        if arm["status"] == "skipped":
            out.append(_record(arm["name"], "converge.job", "skipped", arm.get("note", "")))
            continue
        runs = runs_by_arm.get(arm["name"]) or runs_by_arm.get("reference", [])
        shared = arm["name"] not in runs_by_arm
        for name in _check_names(runs):
            out.append(_per_seed(arm, runs, name, data["config"], shared=shared))
        if arm.get("comparison"):
            c = arm["comparison"]
            out.append(
                _record(
                    arm["name"],
                    "converge.compare.epochs_to_threshold",
                    c["status"],
                    c["message"],
                    bound="one-sided Welch t-test against the reference, alpha "
                    f"{c['values'].get('alpha')}",
                    examples=len(arm["seeds"]),
                    seconds=arm["wall_s"],
                    repro=_repro(arm, c["name"], c["message"], data["config"])
                    if c["status"] == "failed"
                    else None,
                    extra={"values": c["values"]},
                )
            )
    return out


def _check_names(runs: list[dict]) -> list[str]:
    names: list[str] = []
    for r in runs:
        names += [c["name"] for c in r["checks"] if c["name"] not in names]
    return names


def _per_seed(arm: dict, runs: list[dict], name: str, config: dict, *, shared: bool) -> dict:
    """One result for a check over every seed: failed if any seed failed."""
    found = [(r["seed"], c) for r in runs for c in r["checks"] if c["name"] == name]
    failed = [(s, c) for s, c in found if c["status"] == "failed"]
    passed = [(s, c) for s, c in found if c["status"] == "passed"]
    if failed:
        status, shown = "failed", failed
    elif passed:
        status, shown = "passed", passed[:1]
    else:
        status, shown = "skipped", found[:1]
    lines = [f"seed {s}: {c['message']}" for s, c in shown]
    if status == "passed":
        lines.append(f"passed for every seed ({', '.join(str(s) for s, _ in found)})")
    if shared:
        lines.append("(same implementation and settings as the reference: its runs)")
    message = "\n".join(lines)
    return _record(
        arm["name"],
        f"converge.{name}",
        status,
        message,
        examples=len(found),
        repro=_repro(arm, f"converge.{name}", message, config) if failed else None,
        extra={"seeds": [s for s, _ in found]},
    )


def _record(target: str, check: str, status: str, message: str, **kw) -> dict:
    return CheckResult(
        check=check,
        target=target,
        family=FAMILY,
        status=status,
        message=message,
        bound=kw.pop("bound", "verify.converge.checks (see the converge section)"),
        **kw,
    ).to_json()


REPRO = '''\
"""Reproduce a varguard failure: {check} on {target} (the convergence job).

{comment}

Trains again with the same settings, without the controls; exits 1 while a check fails.
Run from a checkout with varguard installed:  python THIS_FILE
"""

import sys

from verify.converge.command import main

sys.exit(main({argv!r}))
'''


def _repro(arm: dict, check: str, message: str, config: dict) -> str:
    from verify.converge.command import argv_for

    target = "torch-eager" if arm["role"] == "reference" else arm["name"]
    comment = "\n".join("    " + line for line in message.splitlines())
    return REPRO.format(
        check=check,
        target=arm["name"],
        comment=comment,
        argv=argv_for(config, targets=[target], controls=False),
    )


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
            f"at init (reference seed {ref['seed']}): {c['name']}: {c['message']}"
            for c in ref["checks"]
            if c["name"].startswith("init.")
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


__all__ = ["FOLDER", "collect", "html", "markdown", "results"]

"""Turn a report folder into report.json, report.md, report.html and repro scripts, atomically.

A report is a pure function of its folder: results.jsonl (shown in the order of the run's plan),
interrupted.json when a signal stopped the run, and each registered stage's subfolder
(verify/stages), whose section goes into the report and whose gated checks become results.
Nothing is measured here.
"""

from __future__ import annotations

import json
from pathlib import Path

from verify.atomic import write_text
from verify.report import html, markdown, results, schema
from verify.result import repro_filename
from verify.stages.registry import STAGES


def write(out: Path, *, wall_seconds: float | None = None) -> dict:
    out = Path(out)
    meta, records = results.read(out / results.FILENAME)
    records = results.in_plan_order(records, meta.pop("plan", None))  # not by finish time
    meta["interrupted"] = results.read_interrupted(out)
    sections = {stage.name: stage.collect(out) for stage in STAGES}
    for stage in STAGES:
        records += stage.results(sections[stage.name])
    written = set()
    for r in records:
        r["repro_path"] = None
        if r.get("repro"):
            rel = Path("repro") / repro_filename(r["check"], r["target"])
            write_text(out / rel, r["repro"])
            r["repro_path"] = str(rel)
            written.add(out / rel)
    for stale in set((out / "repro").glob("repro_*.py")) - written:  # from an earlier run
        stale.unlink()
    report = schema.validate(
        schema.build(meta, records, wall_seconds=wall_seconds, sections=sections)
    )
    write_text(out / "report.json", json.dumps(report, indent=1))
    write_text(out / "report.md", markdown.render(report))
    write_text(out / "report.html", html.render(report, folder=out))
    return report


def load(path: Path) -> dict:
    """A report.json (or the folder holding one), validated."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        return schema.validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise FileNotFoundError(f"no report at {path}; pass a report.json or its folder") from None

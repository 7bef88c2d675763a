"""Turn a results.jsonl into report.json, report.md, report.html and repro scripts, atomically.

The stages' folders beside it (converge/, bench/) are read too: their sections go into the
report, and the convergence job's gated checks become results.
"""

from __future__ import annotations

import json
from pathlib import Path

from verify.checks.base import slug
from verify.report import bench_section, converge_section, markdown, results, schema
from verify.report.atomic import write_text


def write(out: Path, *, wall_seconds: float | None = None) -> dict:
    out = Path(out)
    meta, records = results.read(out / results.FILENAME)
    converge = converge_section.collect(out)
    bench = bench_section.collect(out)
    records += converge_section.results(converge) + bench_section.results(bench)
    written = set()
    for r in records:
        r["repro_path"] = None
        if r.get("repro"):
            rel = Path("repro") / f"repro_{slug(r['check'])}_{slug(r['target'])}.py"
            write_text(out / rel, r["repro"])
            r["repro_path"] = str(rel)
            written.add(out / rel)
    for stale in set((out / "repro").glob("repro_*.py")) - written:  # from an earlier run
        stale.unlink()
    report = schema.validate(
        schema.build(meta, records, wall_seconds=wall_seconds, converge=converge, bench=bench)
    )
    write_text(out / "report.json", json.dumps(report, indent=1))
    write_text(out / "report.md", markdown.render(report))
    from verify.report import html

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

"""report.md: the summary, the failures with their reproduction scripts, each stage's section
when the run had it, then every result."""

from __future__ import annotations

from verify.report import coverage
from verify.report.notes import run_notes
from verify.stages.registry import STAGES


def _ratio(r) -> str:
    w = r.get("worst_ratio")
    return "-" if w is None else (w if isinstance(w, str) else f"{w:.3g}")


def render(report: dict) -> str:
    run, s = report["run"], report["summary"]
    dev = run["device"]
    lines = [
        f"# varguard report ({run['profile']} profile)",
        "",
        f"- varguard {run['varguard']}, Python {run['python']}, torch "
        f"{run['versions'].get('torch')}, hypothesis {run['versions'].get('hypothesis')}",
        f"- device: {dev.get('kind')} ({dev.get('name')})",
        f"- seed {run['seed']}, git {run.get('git_revision')}, started {run['started']}, "
        f"wall time {run.get('wall_seconds') or 0:.0f} s",
        "",
    ]
    for note in run_notes(run):
        lines += [f"**{note.text}**" + (f" `{note.command}`" if note.command else ""), ""]
    lines += [
        f"**{s['passed']} passed, {s['failed']} failed, {s['error']} errors, "
        f"{s['skipped']} skipped.**",
        "",
    ]
    bad = [r for r in report["results"] if r["status"] in ("failed", "error")]
    if bad:
        lines += ["## Failures", ""]
        for r in bad:
            lines += [
                f"### {r['check']} on {r['target']} ({r['status']})",
                "",
                "```",
                r["message"],
                "```",
                "",
            ]
            if r.get("counterexample"):
                lines += [f"counterexample: `{r['counterexample']}`", ""]
            if r.get("repro_path"):
                lines += [f"reproduce: `python {r['repro_path']}`", ""]
    defects = [
        (r, d) for r in report["results"] for d in r.get("extra", {}).get("known_defects", [])
    ]
    if defects:
        lines += ["## Known defects of targets (excluded from the search, re-measured)", ""]
        for r, d in defects:
            state = "still present" if d["present"] else "NO LONGER SEEN"
            lines.append(f"- {r['target']} / {r['check']}: {d['description']} ({state})")
        lines.append("")
    for stage in STAGES:
        lines += stage.markdown(report.get(stage.name))
    lines += _coverage(report.get("coverage") or {})
    lines += [
        "## All results",
        "",
        "| target | check | status | worst error/allowed | cases | seconds | bound |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        note = r["message"] if r["status"] == "skipped" else r.get("bound") or ""
        lines.append(
            f"| {r['target']} | {r['check']} | {r['status']} | {_ratio(r)} | "
            f"{r['examples']} | {r['seconds']:.1f} | {note.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def _coverage(tables: dict) -> list[str]:
    """Per target: each dimension's values reached (cases, failures) and the values never
    reached (flagged)."""
    if not tables:
        return []
    lines = [
        "## Configuration coverage",
        "",
        "Per target, every dimension its cases span: the values reached (cases run; failed "
        "ones said) and the values the family declares reachable that no case reached.",
        "",
    ]
    for target, table in tables.items():
        missing = coverage.unreached_count(table)
        flag = f" ({missing} values NOT REACHED)" if missing else " (every declared value reached)"
        lines += [
            f"### {target}{flag}",
            "",
            "| dimension | reached (cases) | NOT reached |",
            "|---|---|---|",
        ]
        lines += [f"| {d} | {r} | {u} |" for d, r, u in coverage.rows(table)]
        lines.append("")
    return lines

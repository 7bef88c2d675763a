"""report.html: one self-contained page (inline CSS, plots as base64 PNG data URIs, no scripts, no
external resources): run metadata, the summary, failures with their reproduction commands, known
defects, the plots, each stage's section, and every result. It only draws what the report holds."""

from __future__ import annotations

import math
from pathlib import Path

from verify.report import coverage, plots
from verify.report.notes import run_notes
from verify.report.tags import esc, image
from verify.stages.registry import STAGES

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #212121; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em;
                                   margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.meta th { width: 11em; }
pre { background: #f7f7f7; border: 1px solid #e0e0e0; padding: 0.6em; overflow: auto;
      max-height: 24em; white-space: pre-wrap; word-break: break-word; }
code { background: #f3f3f3; padding: 0 0.2em; }
.badge { display: inline-block; padding: 0.2em 0.7em; border-radius: 0.8em; color: white;
         font-weight: bold; margin-right: 0.4em; }
.st-passed { color: #2e7d32; font-weight: bold; } .st-failed { color: #c62828; font-weight: bold; }
.st-error { color: #ef6c00; font-weight: bold; } .st-skipped { color: #757575; }
tr.row-failed { background: #ffebee; } tr.row-error { background: #fff3e0; }
.bg-passed { background: #2e7d32; } .bg-failed { background: #c62828; }
.bg-error { background: #ef6c00; } .bg-skipped { background: #9e9e9e; }
.failure { border-left: 4px solid #c62828; padding-left: 0.8em; margin: 1em 0; }
.failure.error { border-left-color: #ef6c00; }
.note { color: #616161; font-size: 0.9em; }
.run-note { border-left: 4px solid #1565c0; background: #e3f2fd; padding: 0.4em 0.8em; }
.run-note.interrupted { border-left-color: #c62828; background: #ffebee; font-weight: bold; }
img.plot { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
"""

_ORDER = {"failed": 0, "error": 1, "passed": 2, "skipped": 3}


def _ratio(r: dict) -> str:
    v = plots.ratio_value(r)
    if v is None:
        return "-"
    return "inf" if not math.isfinite(v) else f"{v:.3g}"


def _header(report: dict) -> list[str]:
    run, s = report["run"], report["summary"]
    versions = run.get("versions") or {}
    dev = run.get("device") or {}
    argv = run.get("argv")
    wall = run.get("wall_seconds")
    rows = [
        ("varguard", run.get("varguard")),
        ("Python", run.get("python")),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
        ("device", ", ".join(f"{k}: {v}" for k, v in dev.items())),
        ("profile", run.get("profile")),
        ("seed", run.get("seed")),
        ("git revision", run.get("git_revision")),
        ("started", run.get("started")),
        ("finished", run.get("finished")),
        ("wall time", "-" if wall is None else f"{wall:.1f} s"),
        ("command", " ".join(map(str, argv)) if isinstance(argv, (list, tuple)) else argv),
    ]
    total = sum(s.values())
    out = [
        f"<h1>varguard report ({esc(run.get('profile'))} profile)</h1>",
        '<table class="meta">',
        *(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows if v not in (None, "")),
        "</table>",
        *(
            f'<p class="run-note {note.kind}">{esc(note.text)}'
            + (f" <code>{esc(note.command)}</code>" if note.command else "")
            + "</p>"
            for note in run_notes(run)
        ),
        "<h2>Summary</h2>",
        "<p>",
        *(
            f'<span class="badge bg-{st}">{s.get(st, 0)} {esc(label)}</span>'
            for st, label in (
                ("passed", "passed"),
                ("failed", "failed"),
                ("error", "error" if s.get("error", 0) == 1 else "errors"),
                ("skipped", "skipped"),
            )
        ),
        f'<span class="note">{total} results</span></p>',
    ]
    return out


def _failures(results: list[dict]) -> list[str]:
    bad = sorted(
        (r for r in results if r["status"] in ("failed", "error")),
        key=lambda r: _ORDER[r["status"]],
    )
    if not bad:
        return ["<h2>Failures</h2>", "<p>None.</p>"]
    out = [f"<h2>Failures ({len(bad)})</h2>"]
    for r in bad:
        out += [
            f'<div class="failure {esc(r["status"])}">',
            f"<h3>{esc(r['check'])} on {esc(r['target'])} "
            f'(<span class="st-{esc(r["status"])}">{esc(r["status"])}</span>)</h3>',
            f'<p class="note">family {esc(r.get("family"))}; bound: {esc(r.get("bound") or "-")}; '
            f"worst error/allowed {esc(_ratio(r))}; {esc(r.get('examples'))} cases in "
            f"{float(r.get('seconds') or 0):.1f} s</p>",
            f"<pre>{esc(r.get('message'))}</pre>",
        ]
        if r.get("counterexample"):
            out += ["<p>counterexample:</p>", f"<pre>{esc(r['counterexample'])}</pre>"]
        if r.get("worst_case") and r.get("worst_case") != r.get("counterexample"):
            out += ["<p>worst case seen:</p>", f"<pre>{esc(r['worst_case'])}</pre>"]
        if r.get("repro_path"):
            out.append(f"<p>reproduce: <code>python {esc(r['repro_path'])}</code></p>")
        out.append("</div>")
    return out


def _defects(results: list[dict]) -> list[str]:
    rows = [(r, d) for r in results for d in (r.get("extra") or {}).get("known_defects", [])]
    if not rows:
        return []
    out = [
        "<h2>Known defects of targets</h2>",
        '<p class="note">Excluded from the search and re-measured on their own example each '
        "run; a defect no longer seen means the target changed.</p>",
        "<table><tr><th>target</th><th>check</th><th>defect</th><th>state</th>"
        "<th>example</th></tr>",
    ]
    for r, d in rows:
        present = bool(d.get("present"))
        state = (
            '<span class="st-failed">still present</span>'
            if present
            else '<span class="st-passed">NO LONGER SEEN</span>'
        )
        out.append(
            f"<tr><td>{esc(r['target'])}</td><td>{esc(r['check'])}</td>"
            f"<td>{esc(d.get('description'))}</td><td>{state}</td>"
            f"<td><code>{esc(d.get('example'))}</code></td></tr>"
        )
    out.append("</table>")
    return out


def _ratio_plots(results: list[dict]) -> list[str]:
    return [
        "<h2>Worst error / allowed</h2>",
        '<p class="note">Each check measures error / allowed on every case; a result fails when '
        "a case exceeds 1. Ratios of 0 (exact agreement) sit on the floor, infinite or NaN "
        "errors on the ceiling (triangles).</p>",
        image(plots.ratio_distribution(results), "distribution of worst error/allowed per check"),
        image(plots.worst_cases(results), "worst cases"),
    ]


def _all_results(results: list[dict]) -> list[str]:
    out = [
        "<h2>All results</h2>",
        "<table><tr><th>target</th><th>check</th><th>family</th><th>status</th>"
        "<th>worst error/allowed</th><th>cases</th><th>seconds</th><th>bound / note</th></tr>",
    ]
    for r in results:
        st = r["status"]
        note = r.get("message") if st == "skipped" else r.get("bound")
        out.append(
            f'<tr class="row-{esc(st)}"><td>{esc(r["target"])}</td><td>{esc(r["check"])}</td>'
            f'<td>{esc(r.get("family"))}</td><td class="st-{esc(st)}">{esc(st)}</td>'
            f'<td class="num">{esc(_ratio(r))}</td><td class="num">{esc(r.get("examples"))}</td>'
            f'<td class="num">{float(r.get("seconds") or 0):.1f}</td>'
            f"<td>{esc(note or '')}</td></tr>"
        )
    out.append("</table>")
    return out


def _coverage(tables: dict) -> list[str]:
    if not tables:
        return []
    out = [
        "<h2>Configuration coverage</h2>",
        '<p class="note">Per target, every dimension its cases span: the values reached (cases '
        "run; failed ones said) and the values the family declares reachable that no case "
        "reached, flagged.</p>",
    ]
    for target, table in tables.items():
        missing = coverage.unreached_count(table)
        flag = (
            f'<span class="st-failed">{missing} values not reached</span>'
            if missing
            else '<span class="st-passed">every declared value reached</span>'
        )
        out += [
            f"<details><summary>{esc(target)}: {flag}</summary>",
            "<table><tr><th>dimension</th><th>reached (cases)</th><th>NOT reached</th></tr>",
        ]
        for dim, reached, unreached in coverage.rows(table):
            cell = f'<td class="st-failed">{esc(unreached)}</td>' if unreached else "<td></td>"
            out.append(f"<tr><td>{esc(dim)}</td><td>{esc(reached)}</td>{cell}</tr>")
        out += ["</table>", "</details>"]
    return out


def render(report: dict, *, folder: Path | None = None) -> str:
    """The page for a report.json; ``folder`` is the report's folder, where stages keep the
    images they drew (the convergence curves)."""
    results = report["results"]
    title = f"varguard report ({report['run'].get('profile')} profile)"
    body = [
        *_header(report),
        *_failures(results),
        *_defects(results),
        *_ratio_plots(results),
        *(line for stage in STAGES for line in stage.html(report.get(stage.name), folder)),
        *_all_results(results),
        *_coverage(report.get("coverage") or {}),
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )

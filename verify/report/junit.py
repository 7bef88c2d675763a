"""JUnit XML from a report, for CI dashboards: one <testcase> per (target, check).

One <testsuite> per target (classname the target, name the check), inside <testsuites>. A failed
check is a <failure>, an errored one an <error>: the message attribute is the first line, the
text the whole message, the counterexample and the command that reproduces it; a skipped check
is <skipped> with why. The run's profile, seed, versions and whether it was interrupted are each
suite's <properties>. Reads the report only.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from verify.atomic import write_text

#: What XML 1.0 cannot hold even escaped (a target's exception text may carry any byte).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ELEMENT = {"failed": "failure", "error": "error"}


def _text(value) -> str:
    return _NOT_XML.sub("?", "" if value is None else str(value))


def _counts(results: list[dict]) -> dict[str, str]:
    return {
        "tests": str(len(results)),
        "failures": str(sum(r["status"] == "failed" for r in results)),
        "errors": str(sum(r["status"] == "error" for r in results)),
        "skipped": str(sum(r["status"] == "skipped" for r in results)),
        "time": f"{sum(float(r.get('seconds') or 0) for r in results):.3f}",
    }


def _properties(run: dict) -> dict[str, str]:
    props = {
        "varguard": run.get("varguard"),
        "profile": run.get("profile"),
        "seed": run.get("seed"),
        "git_revision": run.get("git_revision"),
        "device": (run.get("device") or {}).get("name"),
        "torch": (run.get("versions") or {}).get("torch"),
    }
    if run.get("interrupted"):
        props["interrupted"] = run["interrupted"].get("signal")
    return {k: _text(v) for k, v in props.items() if v is not None}


def _body(r: dict, folder: Path) -> str:
    lines = [r.get("message") or ""]
    if r.get("counterexample"):
        lines.append(f"counterexample: {r['counterexample']}")
    if r.get("repro_path"):
        lines.append(f"reproduce: python {Path(folder) / r['repro_path']}")
    return _text("\n".join(lines))


def render(report: dict, *, folder: Path) -> str:
    """The XML for ``report``; ``folder`` is the report's folder, as the repro commands use it."""
    results = report["results"]
    root = ET.Element("testsuites", name="varguard", **_counts(results))
    by_target: dict[str, list[dict]] = {}
    for r in results:
        by_target.setdefault(r["target"], []).append(r)
    props = _properties(report["run"])
    for target, rs in by_target.items():
        suite = ET.SubElement(root, "testsuite", name=_text(target), **_counts(rs))
        properties = ET.SubElement(suite, "properties")
        for name, value in props.items():
            ET.SubElement(properties, "property", name=name, value=value)
        for r in rs:
            case = ET.SubElement(
                suite,
                "testcase",
                name=_text(r["check"]),
                classname=_text(target),
                time=f"{float(r.get('seconds') or 0):.3f}",
            )
            message = _text((r.get("message") or "").strip().split("\n")[0])
            if r["status"] in _ELEMENT:
                el = ET.SubElement(
                    case, _ELEMENT[r["status"]], message=message, type=f"varguard.{r['status']}"
                )
                el.text = _body(r, folder)
            elif r["status"] == "skipped":
                ET.SubElement(case, "skipped", message=message)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write(path: Path, report: dict, *, folder: Path) -> None:
    write_text(Path(path), render(report, folder=folder))


__all__ = ["render", "write"]

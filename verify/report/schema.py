"""report.json: a versioned schema built from results.jsonl, and its validation.

Version 2 added "converge" (the ResNet-50 convergence job, whose gated checks are also results of
family "converge") and "bench" (the kernel benchmarks). Version 3 has one key per registered stage
(verify/stages: "depth", "converge", "bench"), null when the run had no such stage. Version 4
adds "coverage": per target, the configurations its cases reached (verify/report/coverage.py).
Version 5 adds run metadata for runs that fit a pipeline (RUN_KEYS_SINCE). Older reports still
load (as baselines for the gate), read as having none of the newer keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from verify.report import coverage
from verify.result import STATUSES

SCHEMA = "varguard.report"
SCHEMA_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
#: The stage sections each version has (null when the run had no such stage).
SECTIONS_SINCE = {2: ("converge", "bench"), 3: ("depth",)}

RUN_KEYS = (
    "varguard",
    "python",
    "versions",
    "device",
    "seed",
    "profile",
    "git_revision",
    "started",
)
RESULT_KEYS = (
    "target",
    "check",
    "family",
    "status",
    "message",
    "bound",
    "worst_ratio",
    "counterexample",
    "repro_path",
    "examples",
    "seconds",
)


# --- version 5: interrupted, sharded and merged runs ----------------------------------------
#: Keys of "run" each version has, null when they do not apply: "interrupted" (the signal, what
#: had finished and the --resume command), "shard" ({"index": K, "count": N} of `run --shard
#: K/N`), "merged" (the folders `varguard merge` combined).
RUN_KEYS_SINCE = {5: ("interrupted", "shard", "merged")}


def run_keys_of(version: int) -> tuple[str, ...]:
    return tuple(k for v, keys in RUN_KEYS_SINCE.items() if v <= version for k in keys)


# --- end of version 5 ----------------------------------------------------------------------


class SchemaError(ValueError):
    pass


def _all_sections() -> Iterable[str]:
    return sections_of(SCHEMA_VERSION)


def sections_of(version: int) -> tuple[str, ...]:
    return tuple(k for v, keys in SECTIONS_SINCE.items() if v <= version for k in keys)


def build(
    meta: dict,
    results: list[dict],
    *,
    wall_seconds: float | None = None,
    sections: dict[str, dict | None],
) -> dict:
    entries = []
    for r in results:
        e = {k: r.get(k) for k in RESULT_KEYS}
        e["worst_case"] = r.get("worst_case")
        e["extra"] = r.get("extra") or {}
        entries.append(e)
    summary = {s: sum(e["status"] == s for e in entries) for s in STATUSES}
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "run": {
            **dict.fromkeys(run_keys_of(SCHEMA_VERSION)),
            **meta,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": wall_seconds,
        },
        "summary": summary,
        "results": entries,
        "coverage": coverage.build(entries),
        **sections,
    }


def validate(report: dict) -> dict:
    """Raise SchemaError naming the first thing wrong; return the report if it is valid."""
    if report.get("schema") != SCHEMA:
        raise SchemaError(f"not a varguard report: schema={report.get('schema')!r}")
    if report.get("schema_version") not in READABLE_VERSIONS:
        raise SchemaError(
            f"schema_version={report.get('schema_version')!r}; this varguard "
            f"reads versions {READABLE_VERSIONS}"
        )
    version = report["schema_version"]
    if version >= 4 and not isinstance(report.get("coverage"), dict):
        raise SchemaError("a version-4 report has 'coverage' (an object); it is missing")
    report.setdefault("coverage", {})
    for key in _all_sections():
        if key in sections_of(version) and key not in report:
            raise SchemaError(
                f"a version-{version} report has {key!r} (null when absent); it is missing"
            )
        report.setdefault(key, None)
        if report[key] is not None and not isinstance(report[key], dict):
            raise SchemaError(f"{key!r} is {type(report[key]).__name__}, not an object or null")
    missing = [k for k in (*RUN_KEYS, *run_keys_of(version)) if k not in report.get("run", {})]
    if missing:
        raise SchemaError(f"run metadata lacks {missing}")
    for key in run_keys_of(SCHEMA_VERSION):  # an older report: none of the newer run keys
        report["run"].setdefault(key, None)
    for i, e in enumerate(report.get("results", [])):
        lacking = [k for k in RESULT_KEYS if k not in e]
        if lacking:
            raise SchemaError(f"results[{i}] lacks {lacking}")
        if e["status"] not in STATUSES:
            raise SchemaError(f"results[{i}].status={e['status']!r}, not one of {STATUSES}")
    return report

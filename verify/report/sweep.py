"""The summary of a seed sweep: the same run at several Hypothesis seeds, one report folder each
(``varguard sweep``), read back as one table of false alarms.

A sweep is how the suite shows that a correct implementation never fails by chance: every
(target, check) meets as many distinct cases as the seeds give it, and any failure is listed
with its seed and reproduction script. Reads report folders only (torch-free): the per-seed
results.jsonl and interrupted.json that `varguard run` wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from verify.report import results
from verify.result import Status

#: The summary's files in the sweep folder.
JSON_NAME, MARKDOWN_NAME = "sweep.json", "sweep.md"


def _ratio(value) -> float | None:
    try:
        return float(value)  # "inf" is how a report spells an infinite ratio
    except (TypeError, ValueError):
        return None


@dataclass
class TargetTally:
    """One target over every seed: checks by status, the cases its checks ran, its largest
    error/allowed ratio (how close a pass came to the bound)."""

    passed: int = 0
    failed: int = 0
    error: int = 0
    skipped: int = 0
    cases: int = 0
    worst_ratio: float = 0.0
    worst_where: str = ""

    def add(self, record: dict, *, seed: int) -> None:
        status = Status(record["status"])
        setattr(self, status.value, getattr(self, status.value) + 1)
        if status == Status.SKIPPED:
            return
        self.cases += int(record.get("examples") or 0)
        ratio = _ratio(record.get("worst_ratio"))
        if ratio is not None and ratio > self.worst_ratio:
            self.worst_ratio = ratio
            self.worst_where = f"{record['check']}, seed {seed}"


@dataclass
class SeedState:
    seed: int
    state: str  # "complete", "interrupted" or "missing"
    checks: int = 0
    planned: int = 0
    revision: str | None = None
    wall_seconds: float | None = None


@dataclass
class Sweep:
    seeds: list[SeedState] = field(default_factory=list)
    targets: dict[str, TargetTally] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)

    @property
    def complete(self) -> list[int]:
        return [s.seed for s in self.seeds if s.state == "complete"]

    @property
    def bad(self) -> int:
        return len(self.failures)


def seed_folder(out: Path, seed: int) -> Path:
    return Path(out) / f"seed-{seed}"


def _report(folder: Path) -> dict | None:
    """The folder's report.json, or None when there is none or it was cut short."""
    try:
        return json.loads((folder / "report.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def seed_state(folder: Path, seed: int) -> SeedState:
    """Whether ``folder`` holds a finished run: a report.json not marked interrupted."""
    return _read_seed(folder, seed)[0]


def _read_seed(folder: Path, seed: int) -> tuple[SeedState, list[dict]]:
    """The seed's state and its results, each file read once: the report's results (they name
    the reproduction scripts written beside it), else the stream's (a run killed before it
    wrote a report)."""
    path = folder / results.FILENAME
    if not path.is_file():
        return SeedState(seed=seed, state="missing"), []
    meta, records = results.read(path)
    report = _report(folder) or {}
    run = report.get("run") or {}
    finished = bool(run) and not run.get("interrupted") and results.read_interrupted(folder) is None
    state = SeedState(
        seed=seed,
        state="complete" if finished else "interrupted",
        checks=len(records),
        planned=len(meta.get("plan") or ()),
        revision=meta.get("git_revision"),
        wall_seconds=run.get("wall_seconds") if finished else None,
    )
    reported = report.get("results")
    return state, reported if isinstance(reported, list) else records


def summarise(out: Path, seeds: list[int]) -> Sweep:
    """Read the seed folders under ``out`` (seed-S) into one Sweep; missing seeds are listed."""
    sweep = Sweep()
    for seed in seeds:
        folder = seed_folder(out, seed)
        state, records = _read_seed(folder, seed)
        sweep.seeds.append(state)
        for r in records:
            sweep.targets.setdefault(r["target"], TargetTally()).add(r, seed=seed)
            if Status(r["status"]) in (Status.FAILED, Status.ERROR):
                sweep.failures.append(
                    {
                        "seed": seed,
                        "target": r["target"],
                        "check": r["check"],
                        "status": r["status"],
                        "message": ((r.get("message") or "").splitlines() or [""])[0][:300],
                        "repro": str(folder / r["repro_path"]) if r.get("repro_path") else None,
                    }
                )
    return sweep


def to_json(sweep: Sweep, *, command: list[str]) -> dict:
    return {
        "command": command,
        "seeds": [vars(s) for s in sweep.seeds],
        "complete_seeds": sweep.complete,
        "failures": sweep.failures,
        "targets": {name: vars(t) for name, t in sorted(sweep.targets.items())},
        "totals": totals(sweep),
    }


def totals(sweep: Sweep) -> dict[str, int]:
    out = {"passed": 0, "failed": 0, "error": 0, "skipped": 0, "cases": 0}
    for t in sweep.targets.values():
        for key in out:
            out[key] += getattr(t, key)
    return out


def to_markdown(sweep: Sweep, *, command: list[str]) -> str:
    tot = totals(sweep)
    seeds = sweep.seeds
    lines = [
        "# Seed sweep",
        "",
        f"Command: `{' '.join(command)}`",
        "",
        f"Seeds complete: {len(sweep.complete)} of {len(seeds)} "
        f"({', '.join(map(str, sweep.complete)) or 'none'}).",
        "",
        f"Checks over all seeds: {tot['passed']} passed, {tot['failed']} failed, {tot['error']} "
        f"errors, {tot['skipped']} skipped; {tot['cases']} cases ran.",
        "",
        "## Seeds",
        "",
        "| seed | state | checks | planned | wall (s) | git revision |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for s in seeds:
        wall = f"{s.wall_seconds:.0f}" if isinstance(s.wall_seconds, (int, float)) else ""
        lines.append(
            f"| {s.seed} | {s.state} | {s.checks} | {s.planned} | {wall} | {s.revision or ''} |"
        )
    lines += ["", "## Failures", ""]
    if not sweep.failures:
        lines.append("None: no check failed or errored at any seed.")
    for f in sweep.failures:
        repro = f" (repro: `{f['repro']}`)" if f["repro"] else ""
        lines.append(f"- seed {f['seed']}, {f['target']}, {f['check']}: {f['message']}{repro}")
    lines += [
        "",
        "## Targets",
        "",
        "Worst ratio: the largest error/allowed of any check at any seed (1 is the bound).",
        "",
        "| target | passed | failed | errors | skipped | cases | worst ratio | where |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, t in sorted(sweep.targets.items()):
        lines.append(
            f"| {name} | {t.passed} | {t.failed} | {t.error} | {t.skipped} | {t.cases} | "
            f"{t.worst_ratio:.3g} | {t.worst_where} |"
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "JSON_NAME",
    "MARKDOWN_NAME",
    "SeedState",
    "Sweep",
    "TargetTally",
    "seed_folder",
    "seed_state",
    "summarise",
    "to_json",
    "to_markdown",
    "totals",
]

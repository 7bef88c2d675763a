"""results.jsonl: one line per finished check, flushed and synced as it is written.

The first line is the run's metadata ({"kind": "run", ...}); every other line is a result
({"kind": "result", ...}). A crash or Ctrl-C loses at most the check that was running; a torn
last line (the process died mid-write) is ignored on reading. The metadata's "plan" lists the
run's (target, check) pairs in the order they were planned: the report shows results in that
order, whatever order parallel workers finished them in.

A run stopped by a signal leaves ``interrupted.json`` beside it (how it stopped, and the command
that continues it); the run that continues it removes it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from verify.atomic import write_text
from verify.result import Result

FILENAME = "results.jsonl"
INTERRUPTED = "interrupted.json"


class ResultStream:
    def __init__(self, path: Path, meta: dict, *, resume: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not (resume and self.path.exists()):
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"kind": "run", **meta}) + "\n")
        else:
            _drop_torn_tail(self.path)

    def append(self, result: Result) -> None:
        line = json.dumps({"kind": "result", **result.to_json()}) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def write_all(path: Path, meta: dict, records: list[dict]) -> None:
    """A whole results.jsonl at once (a merge of several), written atomically."""
    lines = [json.dumps({"kind": "run", **meta})]
    lines += [json.dumps({"kind": "result", **r}) for r in records]
    write_text(Path(path), "\n".join(lines) + "\n")


def read(path: Path) -> tuple[dict, list[dict]]:
    """(run metadata, result records) from a results.jsonl; torn lines are skipped."""
    meta: dict = {}
    results: list[dict] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            kind = rec.pop("kind", None)
            if kind == "run":
                meta = rec
            elif kind == "result":
                results.append(rec)
    return meta, results


def done_pairs(path: Path) -> set[tuple[str, str]]:
    """(target, check) pairs already finished: what --resume skips."""
    if not Path(path).exists():
        return set()
    return {(r["target"], r["check"]) for r in read(path)[1]}


def in_plan_order(records: list[dict], plan: list | None) -> list[dict]:
    """``records`` sorted by their place in the run's plan of (target, check) pairs; records the
    plan does not name keep their order, after the others. Stable, so a rerun is identical."""
    if not plan:
        return list(records)
    place = {(t, c): i for i, (t, c) in enumerate(plan)}
    last = len(place)
    return sorted(records, key=lambda r: place.get((r.get("target"), r.get("check")), last))


def mark_interrupted(out: Path, record: dict) -> None:
    with open(Path(out) / INTERRUPTED, "w", encoding="utf-8") as f:
        f.write(json.dumps(record, indent=1) + "\n")


def read_interrupted(out: Path) -> dict | None:
    """What interrupted.json says about how the run in ``out`` stopped, or None."""
    try:
        return json.loads((Path(out) / INTERRUPTED).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def clear_interrupted(out: Path) -> None:
    (Path(out) / INTERRUPTED).unlink(missing_ok=True)


def _drop_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])

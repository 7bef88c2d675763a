"""results.jsonl: one line per finished check, flushed and synced as it is written.

The first line is the run's metadata ({"kind": "run", ...}); every other line is a result
({"kind": "result", ...}). A crash or Ctrl-C loses at most the check that was running; a torn
last line (the process died mid-write) is ignored on reading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from verify.result import Result

FILENAME = "results.jsonl"


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


def _drop_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])

"""The release gate: compare a run with a stored baseline report.

A change blocks the release (exit 1) when a check that passed in the baseline now fails or
errors, or when its worst error/allowed ratio grew by more than ``threshold`` (relative) while
above ``floor`` (ratios below the floor are far inside their bound: noise, not drift).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from verify.result import Status

BAD = (Status.FAILED, Status.ERROR)


@dataclass(frozen=True)
class Change:
    target: str
    check: str
    kind: str  # "new failure", "drift", "fixed", "new check", "gone"
    old: str
    new: str
    blocking: bool

    def line(self) -> str:
        mark = "BLOCKS" if self.blocking else "note"
        return f"[{mark}] {self.kind}: {self.check} on {self.target}: {self.old} -> {self.new}"


def _ratio(r) -> float:
    w = r.get("worst_ratio")
    if w is None:
        return 0.0
    return float(w) if not isinstance(w, str) else math.inf


def compare(old: dict, new: dict, *, threshold: float = 0.5, floor: float = 0.1) -> list[Change]:
    def key(r):
        return (r["target"], r["check"])

    before = {key(r): r for r in old["results"]}
    after = {key(r): r for r in new["results"]}
    changes = []
    for k, n in after.items():
        o = before.get(k)
        if o is None:
            changes.append(Change(*k, "new check", "-", n["status"], n["status"] in BAD))
            continue
        if n["status"] in BAD and o["status"] not in BAD:
            changes.append(Change(*k, "new failure", o["status"], n["status"], True))
        elif o["status"] in BAD and n["status"] == Status.PASSED:
            changes.append(Change(*k, "fixed", o["status"], n["status"], False))
        elif n["status"] == Status.PASSED and o["status"] == Status.PASSED:
            r_old, r_new = _ratio(o), _ratio(n)
            if r_new > floor and r_new > r_old * (1 + threshold):
                changes.append(
                    Change(*k, "drift", f"worst ratio {r_old:.3g}", f"{r_new:.3g}", True)
                )
    for k, o in before.items():
        if k not in after:
            changes.append(Change(*k, "gone", o["status"], "-", False))
    return changes


def exit_code(changes: list[Change]) -> int:
    return 1 if any(c.blocking for c in changes) else 0

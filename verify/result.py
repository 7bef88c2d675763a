"""The one result model: what a check (or a stage's gated check) concluded about one target.

Everything downstream of the checks (the results stream, report.json, the writers, the gate,
JUnit) reads this shape. It imports neither torch nor Hypothesis, so a report can be written
and gated from a folder alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Status(str, Enum):
    """A result's verdict. A ``str`` enum: it is its own value in JSON and in comparisons."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value

    # Hash as the plain string, so that "failed" and Status.FAILED are one key in sets and dicts.
    __hash__ = str.__hash__

    @property
    def bad(self) -> bool:
        """Failed or errored: what the exit code, the gate and the report's failures count."""
        return self in (Status.FAILED, Status.ERROR)


STATUSES = tuple(s.value for s in Status)


@dataclass
class Result:
    check: str  # "<family>.<what>"
    target: str
    family: str
    status: Status
    message: str = ""
    bound: str = ""  # where the tolerance came from (a theory function or oracle), by name
    worst_ratio: float | None = None  # largest error/allowed seen (the search climbs it)
    worst_case: str | None = None
    counterexample: str | None = None
    repro: str | None = None  # a standalone script that fails while the bug is there
    examples: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    # The failing case itself (for the regression corpus); not part of the JSON record.
    case: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("case")
        out["status"] = self.status.value
        if self.worst_ratio is not None and not math.isfinite(self.worst_ratio):
            out["worst_ratio"] = str(self.worst_ratio)  # JSON has no Infinity
        return out

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Result:
        known = {k: v for k, v in record.items() if k in _FIELDS}
        ratio = known.get("worst_ratio")
        if isinstance(ratio, str):
            known["worst_ratio"] = float(ratio)
        return cls(**known)


_FIELDS = {f for f in Result.__dataclass_fields__ if f != "case"}


def slug(name: str) -> str:
    """A name safe in a file name (targets may be module:Name[float16, channels_last])."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def repro_filename(check: str, target: str) -> str:
    """Where a failure's reproduction script lives inside a report folder's repro/."""
    return f"repro_{slug(check)}_{slug(target)}.py"


__all__ = ["STATUSES", "Result", "Status", "repro_filename", "slug"]

"""The check protocol and the Hypothesis plumbing every family shares.

A check is data: the cases it draws, how it measures one case (error/allowed ratio and a
message), the bound it takes from theory/, and the known-bad cases it always runs first. The
runner here turns that into a result: passed/failed/skipped/error, the worst ratio Hypothesis
could climb to (hypothesis.target), the shrunk counterexample and a reproduction script.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis import target as hypothesis_target

from verify.profiles import Profile
from verify.targets.base import Target

PASSED, FAILED, SKIPPED, ERROR = "passed", "failed", "skipped", "error"
#: hypothesis.target needs a finite score; a NaN output scores this.
RATIO_CAP = 1e12


@dataclass(frozen=True)
class Measurement:
    """One case measured: error/allowed (the check fails a case iff ratio > 1) and why."""

    ratio: float
    message: str

    @property
    def ok(self) -> bool:
        return self.ratio <= 1.0


def no_reason(target: Target) -> str | None:
    return None


@dataclass(frozen=True)
class Check:
    name: str  # "<family>.<what>"
    summary: str
    bound: str  # where the tolerance comes from (a theory/ function or oracle)
    cases: Callable[[Target, Profile], st.SearchStrategy]
    measure: Callable[[Target, Any], Measurement]
    known_cases: Callable[[Target], list] = lambda target: []
    applies: Callable[[Target], str | None] = no_reason
    # Statistical checks draw their own large samples: a handful of Hypothesis cases suffices.
    max_examples: Callable[[Profile], int] | None = None

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass
class CheckResult:
    check: str
    target: str
    family: str
    status: str
    message: str = ""
    bound: str = ""
    worst_ratio: float | None = None
    worst_case: str | None = None
    counterexample: str | None = None
    repro: str | None = None
    examples: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    # The failing case itself (for the regression corpus); not part of the JSON record.
    case: Any = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("case")
        if self.worst_ratio is not None and not math.isfinite(self.worst_ratio):
            out["worst_ratio"] = str(self.worst_ratio)  # JSON has no Infinity
        return out


class CheckFailed(AssertionError):
    def __init__(self, measurement: Measurement):
        super().__init__(measurement.message)
        self.measurement = measurement


REPRO_TEMPLATE = '''\
"""Reproduce a varguard failure: {check} on {target}.

{message_comment}
Run from a checkout with varguard installed:  python {filename}
"""

from verify.checks import get_check
from verify.targets import resolve
from {case_module} import {case_class}  # noqa: F401

target = resolve({target!r})
case = {case!r}
measurement = get_check({check!r}).measure(target, case)
print(measurement.message)
raise SystemExit(0 if measurement.ok else 1)
'''


def repro_script(check: Check, target: Target, case: Any) -> str:
    cls = type(case)
    first = "\n".join("# " + line for line in str(case)[:400].splitlines())
    return REPRO_TEMPLATE.format(
        check=check.name,
        target=target.name,
        case=_PlainRepr(case),
        case_module=cls.__module__,
        case_class=cls.__name__,
        filename=f"repro_{check.name}_{slug(target.name)}.py",
        message_comment=first,
    )


class _PlainRepr:
    def __init__(self, case):
        self.case = case

    def __repr__(self) -> str:
        return repr(self.case)


def slug(name: str) -> str:
    """A name safe in a file name (targets may be module:Name)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def run_check(
    check: Check, target: Target, profile: Profile, *, seed: int = 0, corpus: list | None = None
) -> CheckResult:
    """Run one check on one target: known cases and corpus first, then Hypothesis' search."""
    base = CheckResult(
        check=check.name, target=target.name, family=check.family, status=SKIPPED, bound=check.bound
    )
    reason = target.unavailable() or check.applies(target)
    if reason:
        base.message = reason
        return base

    started = time.perf_counter()
    state: dict[str, Any] = {"worst": -1.0, "worst_case": None, "last": None, "n": 0}

    def measure(case) -> Measurement:
        state["last"] = case
        state["n"] += 1
        m = check.measure(target, case)
        ratio = m.ratio if not math.isnan(m.ratio) else math.inf
        if ratio > state["worst"]:
            state["worst"], state["worst_case"] = ratio, case
        return m

    def finish(status: str, message: str, case=None) -> CheckResult:
        base.status = status
        base.message = message
        base.worst_ratio = state["worst"] if state["worst"] >= 0 else None
        base.worst_case = repr(state["worst_case"]) if state["worst_case"] is not None else None
        if case is not None:
            base.case = case
            base.counterexample = repr(case)
            base.repro = repro_script(check, target, case)
        base.examples = state["n"]
        base.seconds = round(time.perf_counter() - started, 3)
        return base

    defects = target.defects_for(check.name)

    def known_defect(case) -> bool:
        return any(d.matches(case) for d in defects)

    # Known failure modes and earlier counterexamples: fixed, so every run tries them.
    for case in [*(corpus or []), *check.known_cases(target)]:
        if known_defect(case):
            continue
        try:
            m = measure(case)
        except Exception as exc:  # the target broke on a valid input
            return finish(ERROR, _describe(exc), case)
        if not m.ok:
            return finish(FAILED, m.message, case)

    n = check.max_examples(profile) if check.max_examples else _examples(target, profile)

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        print_blob=False,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
    )
    @given(case=check.cases(target, profile))
    def search(case):
        if known_defect(case):
            reject()  # reported below, from the defect's own example
        m = measure(case)
        hypothesis_target(
            min(m.ratio, RATIO_CAP) if not math.isnan(m.ratio) else RATIO_CAP, label="error/allowed"
        )
        if not m.ok:
            raise CheckFailed(m)

    try:
        hypothesis_seed(seed)(search)()
    except CheckFailed as exc:
        # Hypothesis replays the shrunk example last, so state["last"] is the minimal case.
        return finish(FAILED, exc.measurement.message, state["last"])
    except Exception as exc:
        return finish(ERROR, _describe(exc), state["last"])
    worst = state["worst"]
    result = finish(
        PASSED,
        f"{state['n']} cases within the bound; worst error/allowed {worst:.3g}"
        if worst >= 0
        else "no cases",
    )
    _report_defects(check, target, defects, result)
    return result


def _report_defects(check: Check, target: Target, defects, result: CheckResult) -> None:
    """Measure each known defect's example again: still present, or gone (say so)."""
    notes = []
    for d in defects:
        try:
            present = not check.measure(target, d.example).ok
        except Exception:
            present = True
        notes.append({"description": d.description, "present": present, "example": repr(d.example)})
        result.message += (
            f"; known defect {'still present' if present else 'NO LONGER SEEN'}"
            f" (excluded from the search): {d.description}"
        )
    if notes:
        result.extra["known_defects"] = notes


def _examples(target: Target, profile: Profile) -> int:
    return profile.compiled_examples if target.compile else profile.examples


def _describe(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    loc = f" (at {where[0].filename}:{where[0].lineno})" if where else ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}{loc}"

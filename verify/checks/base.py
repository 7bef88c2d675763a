"""The check protocol and the Hypothesis plumbing every family shares.

A check is data, registered next to its code with keywords::

    CHECKS = Checks("batchnorm")

    @CHECKS.register(name="batchnorm.forward", summary="...", bound=rounding.bn_forward_tolerance,
                     cases=..., known=...)
    def measure_forward(target, case) -> Measurement: ...

``cases`` draws Hypothesis cases, ``measure`` turns one into an error/allowed ratio and a message,
``bound`` names the theory function or oracle the tolerance comes from (the object itself, so a
renamed bound fails at import, never as stale text), ``known`` lists the fixed known-bad cases
tried first. :func:`run_check` turns that into a :class:`verify.result.Result`: the worst ratio
Hypothesis could climb to (hypothesis.target), the shrunk counterexample and a reproduction script.
"""

from __future__ import annotations

import math
import time
import traceback
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis import target as hypothesis_target
from hypothesis.errors import Unsatisfiable

from verify.assertions import describe_bound
from verify.profiles import Profile
from verify.result import Result, Status, repro_filename
from verify.strategies.pins import pinned, recording
from verify.targets.base import Target
from verify.targets.variants import refusal

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


@dataclass(frozen=True)
class KnownDefect:
    """A defect of an implementation itself, found by varguard, not a fault of the suite.

    The search steps around the cases it ``matches`` on the targets it ``applies_to``, so that it
    cannot mask other failures, and every run measures its ``example`` again and reports whether
    it is still present.
    """

    checks: tuple[str, ...]
    description: str
    applies_to: Callable[[Target], bool]
    matches: Callable[[Any], bool]
    example: Any
    # For a defect that kills its process (heap corruption), measuring the example here would
    # take the run down: ``probe`` reproduces it in a child process and says whether it is
    # still there.
    probe: Callable[[], bool] | None = None

    def present(self, check: Check, target: Target) -> bool:
        if self.probe is not None:
            return self.probe()
        try:
            return not check.measure(target, self.example).ok
        except Exception:
            return True


def _always(target: Target) -> str | None:
    return None


def _no_cases(target: Target) -> list:
    return []


@dataclass(frozen=True)
class Check:
    name: str  # "<family>.<what>"
    summary: str
    bound: Any  # a theory function or oracle, a tuple of them, or EXACT
    cases: Callable[[Target, Profile], st.SearchStrategy]
    measure: Callable[[Target, Any], Measurement]
    known: Callable[[Target], list] = _no_cases
    applies: Callable[[Target], str | None] = _always
    # Statistical checks draw their own large samples: a handful of Hypothesis cases suffices.
    max_examples: Callable[[Profile], int] | None = None
    # The mode this check runs the target in, for the coverage table ("train", "eval", ...).
    mode: str = ""
    # The family's coverage dimensions (Checks.dimensions): what a target could reach.
    dimensions: Callable[[Target, Profile], dict[str, tuple[str, ...]]] | None = None
    defects: list[KnownDefect] = field(default_factory=list, compare=False, hash=False)

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def bound_text(self) -> str:
        return describe_bound(self.bound)

    def defects_for(self, target: Target) -> tuple[KnownDefect, ...]:
        return tuple(d for d in self.defects if d.applies_to(target))

    def coverage_of(self, case: Any) -> dict[str, str | tuple[str, ...]]:
        """The configuration one case puts the target in: the case's own dimensions
        (``case.coverage()``, where the family's cases have them) and this check's mode."""
        labels = dict(case.coverage()) if hasattr(case, "coverage") else {}
        if self.mode and "mode" not in labels:
            labels["mode"] = self.mode
        return labels


class Checks(Sequence):
    """A family's checks in the order they are declared: its module's ``CHECKS``."""

    def __init__(
        self,
        family: str,
        *,
        dimensions: Callable[[Target, Profile], dict[str, tuple[str, ...]]] | None = None,
    ) -> None:
        self.family = family
        # The coverage dimensions a target of this family can reach under a profile, and their
        # values (the report flags those no case reached).
        self.dimensions = dimensions
        self._checks: list[Check] = []

    def register(
        self,
        *,
        name: str,
        summary: str,
        bound: Any,
        cases: Callable[[Target, Profile], st.SearchStrategy],
        known: Callable[[Target], list] = _no_cases,
        applies: Callable[[Target], str | None] = _always,
        max_examples: Callable[[Profile], int] | None = None,
        mode: str = "",
    ) -> Callable:
        """Decorate a ``measure(target, case) -> Measurement`` function: it becomes a check."""
        if not name.startswith(self.family + "."):
            raise ValueError(f"check name={name!r}: a {self.family} check is named {self.family}.*")
        describe_bound(bound)  # an unknown kind of bound fails here, at import

        def decorate(measure: Callable[[Target, Any], Measurement]):
            self._checks.append(
                Check(
                    name=name,
                    summary=summary,
                    bound=bound,
                    cases=cases,
                    measure=measure,
                    known=known,
                    applies=applies,
                    max_examples=max_examples,
                    mode=mode,
                    dimensions=self.dimensions,
                )
            )
            return measure

        return decorate

    def add_defect(self, defect: KnownDefect) -> KnownDefect:
        """Declare a known defect of some targets, excluded from the search of its checks."""
        names = {c.name for c in self._checks}
        for name in defect.checks:
            if name not in names:
                raise ValueError(f"known defect names check {name!r}; {self.family} has {names}")
            next(c for c in self._checks if c.name == name).defects.append(defect)
        return defect

    def __iter__(self) -> Iterator[Check]:
        return iter(self._checks)

    def __getitem__(self, key: int | str) -> Check:
        """A check by position or by name."""
        if isinstance(key, str):
            for c in self._checks:
                if c.name == key:
                    return c
            raise KeyError(f"no check {key!r} in {self.family}: {[c.name for c in self]}")
        return self._checks[key]

    def __len__(self) -> int:
        return len(self._checks)


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
from verify.resolve import resolve
from {case_module} import {case_class}  # noqa: F401

target = resolve({target!r})
case = {case!r}
measurement = get_check({check!r}).measure(target, case)
print(measurement.message)
raise SystemExit(0 if measurement.ok else 1)
'''


class _PlainRepr:
    def __init__(self, case):
        self.case = case

    def __repr__(self) -> str:
        return repr(self.case)


def repro_script(check: Check, target: Target, case: Any) -> str:
    cls = type(case)
    first = "\n".join("# " + line for line in str(case)[:400].splitlines())
    return REPRO_TEMPLATE.format(
        check=check.name,
        target=target.name,
        case=_PlainRepr(case),
        case_module=cls.__module__,
        case_class=cls.__name__,
        filename=repro_filename(check.name, target.name),
        message_comment=first,
    )


def run_check(
    check: Check,
    target: Target,
    profile: Profile,
    *,
    seed: int = 0,
    corpus: Sequence = (),
    known_cases: bool = True,
) -> Result:
    """Run one check on one target: the corpus and the known cases first (``known_cases=False``
    leaves the latter out, to measure the search alone), then Hypothesis' search."""
    base = Result(
        check=check.name,
        target=target.name,
        family=check.family,
        status=Status.SKIPPED,
        bound=check.bound_text,
    )
    reason = target.unavailable() or check.applies(target)
    if reason:
        base.message = reason
        return base

    started = time.perf_counter()
    state: dict[str, Any] = {"worst": -1.0, "worst_case": None, "last": None, "n": 0}
    tally: dict[str, dict[str, list[int]]] = {}

    def measure(case) -> Measurement:
        state["last"] = case
        state["n"] += 1
        m = None
        try:
            m = check.measure(target, case)
        finally:
            _count(tally, check.coverage_of(case), passed=m is not None and m.ok)
        ratio = m.ratio if not math.isnan(m.ratio) else math.inf
        if ratio > state["worst"]:
            state["worst"], state["worst_case"] = ratio, case
        return m

    def finish(status: Status, message: str, case=None, found_by: str | None = None) -> Result:
        base.status = status
        base.message = message
        base.worst_ratio = state["worst"] if state["worst"] >= 0 else None
        base.worst_case = repr(state["worst_case"]) if state["worst_case"] is not None else None
        if case is not None:
            base.case = case
            base.counterexample = repr(case)
            base.repro = repro_script(check, target, case)
        if found_by is not None:
            base.extra["found_by"] = found_by
        base.examples = state["n"]
        base.seconds = round(time.perf_counter() - started, 3)
        if tally:
            base.extra["coverage"] = tally
            if check.dimensions is not None:
                base.extra["declared"] = {
                    dim: list(values) for dim, values in check.dimensions(target, profile).items()
                }
        return base

    defects = check.defects_for(target)

    def known_defect(case) -> bool:
        return any(d.matches(case) for d in defects)

    # Earlier counterexamples and known failure modes: fixed, so every run tries them.
    fixed = [("corpus", c) for c in corpus]
    if known_cases:
        fixed += [("known case", c) for c in check.known(target)]
    for origin, case in fixed:
        if known_defect(case):
            continue
        first = state["n"] == 0
        try:
            m = measure(case)
        except Exception as exc:  # the target broke on a valid input
            why = refusal(exc, target) if first else None
            if why:  # a variant the target does not support at all: skipped, with its word
                return finish(Status.SKIPPED, why)
            return finish(Status.ERROR, describe_exception(exc), case, origin)
        if not m.ok:
            return finish(Status.FAILED, m.message, case, origin)

    n = check.max_examples(profile) if check.max_examples else _examples(target, profile)

    def search(examples: int, seed_: int, *, pinned_round: bool = False) -> None:
        rejected = valid = 0

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            print_blob=False,
            report_multiple_bugs=False,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
        )
        @given(case=check.cases(target, profile))
        def one(case):
            nonlocal rejected, valid
            if known_defect(case):
                rejected += 1
                if pinned_round and not valid and rejected >= _DEFECT_ONLY_ROUND:
                    raise _DefectsOnly  # these pins draw only the defect's cases
                reject()  # reported below, from the defect's own example
            valid += 1
            m = measure(case)
            hypothesis_target(
                min(m.ratio, RATIO_CAP) if not math.isnan(m.ratio) else RATIO_CAP,
                label="error/allowed",
            )
            if not m.ok:
                raise CheckFailed(m)

        hypothesis_seed(seed_)(one)()

    # The search, then a few cases with the declared values it did not reach pinned (_gap_pins).
    # The gaps are read after the search and after each round: its tally, and the dimensions its
    # strategy drew with choose() (recorded at draw time).
    chosen: set[str] = set()

    def steps():
        yield "search", None
        if check.dimensions is not None:
            for pins in _gap_pins(check, target, profile, tally, chosen):
                yield "search", pins

    for found_by, pins in steps():
        try:
            if pins is None:
                with recording() as chosen_here:
                    search(n, search_seed(seed, check.name))
                chosen |= chosen_here
            else:
                with pinned(pins):
                    search(
                        GAP_EXAMPLES,
                        search_seed(seed, f"{check.name}:{sorted(pins.items())}"),
                        pinned_round=True,
                    )
        except (_DefectsOnly, Unsatisfiable) as exc:
            if pins is None or not defects:
                return finish(Status.ERROR, describe_exception(exc), state["last"], found_by)
            # Every case these pins draw is a known defect's (the search steps around them): the
            # values stay unreached in the table; the defect is reported from its own example.
            continue
        except CheckFailed as exc:
            # Hypothesis replays the shrunk example last, so state["last"] is the minimal case.
            by = found_by if pins is None else f"{found_by}, {pinned_text(pins)} pinned"
            return finish(Status.FAILED, exc.measurement.message, state["last"], by)
        except Exception as exc:
            why = refusal(exc, target) if state["n"] <= 1 else None
            if why:
                return finish(Status.SKIPPED, why)
            return finish(Status.ERROR, describe_exception(exc), state["last"], found_by)
    worst = state["worst"]
    result = finish(
        Status.PASSED,
        f"{state['n']} cases within the bound; worst error/allowed {worst:.3g}"
        if worst >= 0
        else "no cases",
    )
    _report_defects(check, target, defects, result)
    return result


def _report_defects(check: Check, target: Target, defects, result: Result) -> None:
    """Measure each known defect's example again: still present, or gone (say so)."""
    notes = []
    for d in defects:
        present = d.present(check, target)
        notes.append({"description": d.description, "present": present, "example": repr(d.example)})
        result.message += (
            f"; known defect {'still present' if present else 'NO LONGER SEEN'}"
            f" (excluded from the search): {d.description}"
        )
    if notes:
        result.extra["known_defects"] = notes


#: Cases run for each round of pins (_gap_pins) after the search.
GAP_EXAMPLES = 3

#: Known-defect cases in a row after which a round of pins is given up: its pins draw nothing
#: else (Hypothesis would draw ~1000 before calling it unsatisfiable; 50 in a row, where even
#: one case in ten outside the defect would have shown, are enough).
_DEFECT_ONLY_ROUND = 50


class _DefectsOnly(BaseException):
    """A round of pins drew only known-defect cases. A BaseException, so that Hypothesis does
    not take it for a failure to shrink: it ends the round at once."""


def _gap_pins(
    check: Check, target: Target, profile: Profile, tally: dict, chosen: set[str]
) -> Iterator[dict[str, str]]:
    """Rounds of pins that close the gaps the search left, the gaps read afresh before each
    round (a round's cases reach values besides their pins).

    First, together, one unreached value of every dimension that has one: rare values then
    meet in one case (where conjunction bugs live), and the rounds number the largest
    dimension's gaps, not their sum (each new case is a recompilation for a compiled target).
    Then each value still unreached after its joint round, alone: a strategy cannot honour some
    pairs of pins at once (a channels_last input of rank 2), and ignores one of them."""
    tried: dict[tuple[str, str], int] = {}  # (dimension, value) -> rounds it was pinned in
    while True:
        gaps = _gaps(check, target, profile, tally, chosen)
        pins: dict[str, str] = {}
        for dim, value in gaps:
            if not tried.get((dim, value)):
                pins.setdefault(dim, value)
        if not pins:
            alone = [(d, v) for d, v in gaps if tried.get((d, v)) == 1]
            if not alone:
                return
            pins = dict(alone[:1])
        for pair in pins.items():
            tried[pair] = tried.get(pair, 0) + 1
        yield pins


def pinned_text(pins: Mapping[str, str]) -> str:
    """How a failure's report names the pins it was found under: "x layout = offset, ..."."""
    return ", ".join(f"{dim} = {value}" for dim, value in pins.items())


def _gaps(
    check: Check, target: Target, profile: Profile, tally: dict, chosen: set[str]
) -> list[tuple[str, str]]:
    """The declared (dimension, value) pairs no case of the search reached, in declared order.
    Only dimensions the search drew with verify.strategies.pins.choose (``chosen``) can be
    pinned; the others' gaps stay flagged in the report."""
    declared = check.dimensions(target, profile)
    return [
        (dim, value)
        for dim, values in declared.items()
        for value in values
        if dim in chosen and not tally.get(dim, {}).get(value, [0])[0]
    ]


def search_seed(seed: int, check: str) -> int:
    """The Hypothesis seed of one check's search: the run's seed and the check's name, so that
    checks drawing from one strategy explore different cases (with one seed for all, every check
    of a family would draw the same ones), and a run stays reproducible."""
    return seed * 1_000_003 + zlib.crc32(check.encode())


def _count(tally: dict, labels: dict, *, passed: bool) -> None:
    """Add one case to the coverage tally: {dimension: {value: [cases, passed]}}."""
    for dim, values in labels.items():
        for value in (values,) if isinstance(values, str) else values:
            ran_passed = tally.setdefault(dim, {}).setdefault(value, [0, 0])
            ran_passed[0] += 1
            ran_passed[1] += int(passed)


def _examples(target: Target, profile: Profile) -> int:
    return profile.compiled_examples if target.compile else profile.examples


def describe_exception(exc: BaseException) -> str:
    """One line: the exception's type and first line, and where it was raised."""
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    loc = f" (at {where[0].filename}:{where[0].lineno})" if where else ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}{loc}"


__all__ = [
    "Check",
    "CheckFailed",
    "Checks",
    "KnownDefect",
    "Measurement",
    "describe_exception",
    "repro_script",
    "run_check",
]

"""Run checks on targets and hand each result to a callback as soon as it exists."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from verify.checks import checks_for
from verify.checks.base import CheckResult, run_check
from verify.profiles import Profile
from verify.targets.base import FAMILIES, Target


def plan(targets: Iterable[Target], families: Iterable[str] | None = None):
    """(target, check) pairs to run: each target against every check of its family."""
    wanted = set(families or FAMILIES)
    return [(t, c) for t in targets if t.family in wanted for c in checks_for(t.family)]


def run(
    targets: Iterable[Target],
    *,
    profile: Profile,
    seed: int = 0,
    families: Iterable[str] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    results = []
    for target, check in plan(targets, families):
        result = run_check(check, target, profile, seed=seed)
        results.append(result)
        if on_result:
            on_result(result)
    return results

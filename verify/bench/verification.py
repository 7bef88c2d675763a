"""Which (target, operation) pairs may be benchmarked: only those that passed verification.

The evidence is either a report.json from `varguard run` (``--verified REPORT``) or the checks
themselves, run here at the quick profile. Each operation names the checks that cover it, in its
family's benchmark (verify/bench/families/).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from verify import execution
from verify.bench.families import bench_of
from verify.report import writer
from verify.resolve import resolve
from verify.targets.base import Target


def required(target: Target, op: str) -> list[tuple[str, str]]:
    """(target name, check name) pairs that must have passed for ``op`` on ``target``: the
    checks its family declares for the op, and any further evidence it names."""
    bench = bench_of(target.family)
    pairs = [(target.name, check) for check in bench.op(op).checks]
    return pairs + list(bench.evidence(target, op))


def from_report(path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """{(target, check): (status, message)} from a `varguard run` report (file or folder)."""
    report = writer.load(Path(path))
    return {(r["target"], r["check"]): (r["status"], r["message"]) for r in report["results"]}


def run_checks(
    pairs: Iterable[tuple[str, str]], *, profile: str = "quick", seed: int = 0, log=print
) -> dict[tuple[str, str], tuple[str, str]]:
    """Run each (target, check) once, in this process; {(target, check): (status, message)}."""
    # A check is named after its family ("layernorm.forward"): a user's class is resolved as
    # that family's drop-in.
    jobs = [
        execution.Job.of(resolve(target_name, family=check_name.split(".")[0]), [check_name])
        for target_name, check_name in sorted(set(pairs))
    ]
    out = {}

    def record(result) -> None:
        out[(result.target, result.check)] = (result.status, result.message)
        log(
            f"  verify {result.check:22s} {result.target:26s} {result.status} "
            f"({result.seconds:.1f} s)"
        )

    settings = execution.execution_for(profile, seed=seed, isolate=False)
    execution.run_checks(jobs, settings, on_result=record)
    return out


def refusal(
    target: Target, op: str, statuses: dict[tuple[str, str], tuple[str, str]]
) -> str | None:
    """Why ``op`` on ``target`` is not benchmarked, or None when its checks passed."""
    bench = bench_of(target.family)
    why = bench.applies(target)
    if why:
        return why
    if bench.op(op).training and "train" not in target.modes:
        return "target exists for inference only"
    for key in required(target, op):
        status, message = statuses.get(key, ("missing", "not in the verification results"))
        if status != "passed":
            first = message.splitlines()[0][:160] if message else ""
            return f"not verified: {key[1]} on {key[0]} {status}" + (f" ({first})" if first else "")
    return None


__all__ = ["from_report", "refusal", "required", "run_checks"]

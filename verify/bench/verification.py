"""Which (target, operation) pairs may be benchmarked: only those that passed verification.

The evidence is either a report.json from `varguard run` (``--verified REPORT``) or the checks
themselves, run here at the quick profile. Each operation names the checks that cover it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from verify import execution
from verify.report import writer
from verify.resolve import resolve
from verify.targets import triton as triton_targets
from verify.targets.base import Target

#: The checks an operation's results rest on.
OP_CHECKS: dict[str, tuple[str, ...]] = {
    "fwd-train": ("batchnorm.forward",),
    "fwd-eval": ("batchnorm.eval",),
    "bwd-train": ("batchnorm.backward",),
    "tail-train": ("batchnorm.forward",),
}
#: The fused Triton tail (BN + add + ReLU in one kernel) is verified through the residual block
#: built on it; its plain batch-norm checks do not cover the add and the ReLU.
FUSED_TAIL_EVIDENCE: tuple[tuple[str, str], ...] = (
    ("triton-basic-fused-tail", "residual.forward"),
)


def triton_names() -> set[str]:
    return {t.name for t in triton_targets.builtin()}


def required(target: Target, op: str) -> list[tuple[str, str]]:
    """(target name, check name) pairs that must have passed for ``op`` on ``target``."""
    pairs = [(target.name, check) for check in OP_CHECKS[op]]
    if op == "tail-train" and target.name in triton_names():
        pairs += list(FUSED_TAIL_EVIDENCE)
    return pairs


def from_report(path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """{(target, check): (status, message)} from a `varguard run` report (file or folder)."""
    report = writer.load(Path(path))
    return {(r["target"], r["check"]): (r["status"], r["message"]) for r in report["results"]}


def run_checks(
    pairs: Iterable[tuple[str, str]], *, profile: str = "quick", seed: int = 0, log=print
) -> dict[tuple[str, str], tuple[str, str]]:
    """Run each (target, check) once, in this process; {(target, check): (status, message)}."""
    jobs = [
        execution.Job.of(resolve(target_name, family="batchnorm"), [check_name])
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
    if op != "fwd-eval" and "train" not in target.modes:
        return "target exists for inference only"
    for key in required(target, op):
        status, message = statuses.get(key, ("missing", "not in the verification results"))
        if status != "passed":
            first = message.splitlines()[0][:160] if message else ""
            return f"not verified: {key[1]} on {key[0]} {status}" + (f" ({first})" if first else "")
    return None


__all__ = ["OP_CHECKS", "from_report", "refusal", "required", "run_checks"]

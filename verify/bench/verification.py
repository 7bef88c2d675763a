"""Which (target, operation) pairs may be benchmarked: only those that passed verification.

The evidence is either a report.json from `varguard run` (``--verified REPORT``) or the checks
themselves, run here at the quick profile. Each operation names the checks that cover it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

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
    from verify.targets import triton as triton_targets

    return {t.name for t in triton_targets.builtin()}


def required(target: Target, op: str) -> list[tuple[str, str]]:
    """(target name, check name) pairs that must have passed for ``op`` on ``target``."""
    pairs = [(target.name, check) for check in OP_CHECKS[op]]
    if op == "tail-train" and target.name in triton_names():
        pairs += list(FUSED_TAIL_EVIDENCE)
    return pairs


def from_report(path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """{(target, check): (status, message)} from a `varguard run` report (file or folder)."""
    from verify.report import writer

    report = writer.load(Path(path))
    return {(r["target"], r["check"]): (r["status"], r["message"]) for r in report["results"]}


def run_checks(
    pairs: Iterable[tuple[str, str]], *, profile: str = "quick", seed: int = 0, log=print
) -> dict[tuple[str, str], tuple[str, str]]:
    """Run each (target, check) once, in this process; {(target, check): (status, message)}."""
    from verify.bench.workloads import find_target
    from verify.checks import get_check
    from verify.checks.base import run_check
    from verify.profiles import get_profile

    prof = get_profile(profile)
    out = {}
    for target_name, check_name in sorted(set(pairs)):
        result = run_check(get_check(check_name), find_target(target_name), prof, seed=seed)
        out[(target_name, check_name)] = (result.status, result.message)
        log(f"  verify {check_name:22s} {target_name:26s} {result.status} ({result.seconds:.1f} s)")
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

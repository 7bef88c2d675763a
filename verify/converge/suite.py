"""A convergence job: the reference, each target and the controls over the same seeds, compared.

:func:`plan` turns a config into arms (raising ValueError with the fix for a bad target);
:func:`run_job` trains them and returns a :class:`ConvergeSummary`, which is what
``varguard converge`` prints, writes as converge.json and plots.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import statistics
import time
from dataclasses import dataclass, field

import torch

from verify.converge.checks import epochs_ttest, record
from verify.converge.config import ConvergeConfig
from verify.converge.controls import (
    CONTROL,
    REFERENCE,
    TARGET,
    Arm,
    control_arms,
    reference_arm,
    target_arm,
)
from verify.converge.distributed import Runtime
from verify.converge.train import Progress, RunResult, load_data, train
from verify.resolve import TargetError, resolve
from verify.result import Result, Status

SCHEMA = "varguard.converge/1"


@dataclass
class ArmSummary:
    name: str
    role: str
    description: str
    status: str  # passed / failed / skipped (targets, reference) or reported (controls)
    seeds: list[int] = field(default_factory=list)
    final_acc: list[float] = field(default_factory=list)
    epochs_to_threshold: list[int | None] = field(default_factory=list)
    wall_s: float = 0.0
    images_per_s: float = 0.0
    comparison: Result | None = None  # targets: the t-test against the reference
    note: str = ""

    @property
    def mean_acc(self) -> float:
        return statistics.fmean(self.final_acc) if self.final_acc else math.nan


@dataclass
class ConvergeSummary:
    schema: str
    config: dict
    environment: dict
    arms: list[ArmSummary]
    runs: list[RunResult]
    controls: list[str]  # one line per control: how it fared against the reference
    bench: dict | None
    wall_s: float
    status: str  # passed / failed

    def to_dict(self) -> dict:
        return _finite(dataclasses.asdict(self, dict_factory=_json_fields))


def plan(cfg: ConvergeConfig) -> list[Arm]:
    """The arms of the job: targets first, then the reference, then the controls."""
    arms = []
    for spec in cfg.targets:
        try:
            target = resolve(spec, family="batchnorm")
        except TargetError as exc:  # its message names the target already
            raise ValueError(str(exc)) from None
        except ValueError as exc:  # an unknown mutant:NAME
            raise ValueError(f"target={spec!r}: {exc}") from None
        arms.append(target_arm(target))
    return [*arms, reference_arm(), *control_arms(cfg.controls, cfg.model)]


def run_job(
    cfg: ConvergeConfig, rt: Runtime, *, arms: list[Arm] | None = None, bench_steps: int = 0
) -> ConvergeSummary:
    t0 = time.perf_counter()
    arms = arms if arms is not None else plan(cfg)
    data = load_data(cfg)
    progress = Progress(cfg.progress and rt.is_main)
    bench = None
    if bench_steps:
        from verify.converge.bench import bench_overhead

        bench = bench_overhead(cfg, rt, data, steps=bench_steps)
        if rt.is_main and cfg.progress:
            print(bench["message"], flush=True)

    reference = next(a for a in arms if a.role == REFERENCE)
    ref_runs = [train(reference, s, cfg, data, rt, progress) for s in cfg.seed_list]
    runs: list[RunResult] = list(ref_runs)
    summaries = [_arm_summary(reference, ref_runs)]
    for arm in (a for a in arms if a.role == TARGET):
        if arm.unavailable:
            summaries.append(
                ArmSummary(arm.name, TARGET, arm.description, Status.SKIPPED, note=arm.unavailable)
            )
            continue
        if arm.shares_reference:
            target_runs = [
                dataclasses.replace(
                    r,
                    arm=arm.name,
                    role=TARGET,
                    note="same implementation and settings as the reference: its run",
                )
                for r in ref_runs
            ]
        else:
            target_runs = [train(arm, s, cfg, data, rt, progress) for s in cfg.seed_list]
            runs += target_runs
        summary = _arm_summary(arm, target_runs)
        summary.comparison = compare(target_runs, ref_runs, cfg)
        if arm.shares_reference:
            summary.note = "same implementation and settings as the reference: shares its runs"
        if summary.comparison.status == Status.FAILED:
            summary.status = Status.FAILED
        summaries.insert(len(summaries) - 1, summary)  # targets listed before the reference

    control_lines = []
    ref_acc = statistics.fmean(r.acc[-1] if r.acc else 0.0 for r in ref_runs)
    for arm in (a for a in arms if a.role == CONTROL):
        seeds = cfg.seed_list[: cfg.control_seeds]
        control_runs = [train(arm, s, cfg, data, rt, progress) for s in seeds]
        runs += control_runs
        summary = _arm_summary(arm, control_runs)
        summaries.append(summary)
        control_lines.append(_control_line(summary, control_runs, ref_acc, cfg))

    gated = [s for s in summaries if s.role in (TARGET, REFERENCE)]
    status = Status.FAILED if any(s.status == Status.FAILED for s in gated) else Status.PASSED
    return ConvergeSummary(
        schema=SCHEMA,
        config=cfg.to_dict(),
        environment=environment(rt),
        arms=summaries,
        runs=runs,
        controls=control_lines,
        bench=bench,
        wall_s=time.perf_counter() - t0,
        status=status,
    )


def compare(target: list[RunResult], reference: list[RunResult], cfg: ConvergeConfig):
    """compare.epochs_to_threshold: does the target need more epochs than the reference?"""
    censored = cfg.epochs + 1

    def counts(runs):
        return [r.epochs_to_threshold or censored for r in runs]

    t, r = counts(target), counts(reference)
    p, how = epochs_ttest(t, r, alpha=cfg.alpha)
    values = {"target": t, "reference": r, "censored_at": censored, "p": p, "alpha": cfg.alpha}
    if p is None:
        return record("compare.epochs_to_threshold", Status.SKIPPED, how, values)
    slower = p < cfg.alpha
    msg = (
        f"epochs to {cfg.threshold:.1%}: target {t} vs reference {r} (never = {censored}); "
        f"{how} p = {p:.3g} {'<' if slower else '>='} alpha {cfg.alpha:g}"
        + (": the target converges slower" if slower else "")
    )
    return record(
        "compare.epochs_to_threshold", Status.FAILED if slower else Status.PASSED, msg, values
    )


def _arm_summary(arm: Arm, runs: list[RunResult]) -> ArmSummary:
    failed = any(not r.passed for r in runs)
    status = "reported" if arm.role == CONTROL else (Status.FAILED if failed else Status.PASSED)
    train_s = sum(r.train_s for r in runs)
    images = sum(r.images_per_s * r.train_s for r in runs)
    return ArmSummary(
        name=arm.name,
        role=arm.role,
        description=arm.description,
        status=status,
        seeds=[r.seed for r in runs],
        final_acc=[r.acc[-1] if r.acc else 0.0 for r in runs],
        epochs_to_threshold=[r.epochs_to_threshold for r in runs],
        wall_s=sum(r.wall_s for r in runs),
        images_per_s=images / train_s if train_s > 0 else 0.0,
    )


def _control_line(summary: ArmSummary, runs: list[RunResult], ref_acc: float, cfg) -> str:
    acc = summary.mean_acc
    stopped = [r.failure for r in runs if r.failure]
    verdict = "below" if acc < ref_acc else "NOT below"
    line = (
        f"{summary.name}: held-out accuracy {acc:.1%} after {cfg.epochs} epochs, {verdict} the "
        f"reference's {ref_acc:.1%}"
    )
    if stopped:
        line += f"; stopped: {stopped[0]}"
    return line


def environment(rt: Runtime) -> dict:
    import numpy
    import scipy

    return {
        **rt.describe(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "git_revision": _git_revision(),
    }


def _git_revision() -> str | None:
    import subprocess
    from pathlib import Path

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _json_fields(items) -> dict:
    """asdict's dict factory: statuses as their values, and no Result.case (not JSON)."""
    return {k: (v.value if isinstance(v, Status) else v) for k, v in items if k != "case"}


def _finite(obj):
    """JSON has no NaN/Infinity: write them as strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj

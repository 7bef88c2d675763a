"""`varguard run`, the main job: plan -> execute -> write -> gate.

- :func:`plan` turns the command line into a :class:`RunPlan` (targets, jobs, stages, baseline),
  raising UsageError before any work for anything wrong;
- :func:`execute` runs the jobs' checks, streaming each result to results.jsonl;
- :func:`write` runs the stages and writes the report;
- :func:`gate` prints the failures and the summary and turns them, and the baseline, into the
  exit code.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from verify import corpus, table
from verify.checks import checks_for
from verify.execution import Execution, Job, run_checks
from verify.exits import EXIT_FAILED, EXIT_OK, UsageError
from verify.families import FAMILIES
from verify.profiles import get_profile
from verify.progress import Progress
from verify.report import gate as report_gate
from verify.report import metadata, results, writer
from verify.resolve import TargetError, resolve
from verify.result import Result, Status
from verify.stages.base import PlannedStage, plan_stage, run_stage
from verify.stages.registry import STAGES
from verify.targets import builtin, variants
from verify.targets.base import Target


@dataclass
class RunPlan:
    out: Path
    execution: Execution
    targets: list[tuple[str, Target]]  # (spec a worker resolves again, Target)
    jobs: list[Job]
    stages: list[PlannedStage]
    kept: int = 0  # results kept from an interrupted run (--resume)
    resume: bool = False
    baseline: dict | None = None
    baseline_path: Path | None = None
    threshold: float = 0.5
    started: float = field(default_factory=time.monotonic)

    @property
    def total(self) -> int:
        return sum(len(j.checks) for j in self.jobs)


def cmd_run(args: argparse.Namespace) -> int:
    if args.list:
        return list_targets()
    run_plan = plan(args)
    execute(run_plan)
    report = write(run_plan)
    return gate(run_plan, report)


def list_targets() -> int:
    for t in builtin():
        reason = t.unavailable()
        print(
            f"{t.name:32s} {t.family:10s} {t.description}"
            + (f"  [skipped here: {reason}]" if reason else "")
        )
    return EXIT_OK


# --- plan ----------------------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> RunPlan:
    """Everything the run will do, checked before any of it starts."""
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout={args.timeout}: give a positive number of seconds")
    baseline = _baseline(args.baseline)
    choice = variants.Choice(
        dtypes=tuple(args.dtype) if args.dtype else None,
        layouts=tuple(args.layout) if args.layout else None,
        device=args.device,
    )
    targets = resolve_targets(args.target, args.family, choice=choice)
    stages = plan_stages(args, targets)
    out = args.out or default_out()
    stream_path = out / results.FILENAME
    if args.resume and not stream_path.exists():
        raise UsageError(f"--resume: no {stream_path} to continue; run without --resume first")
    done = results.done_pairs(stream_path) if args.resume else set()
    jobs = plan_jobs(targets, args.family, done)
    if not jobs and not done and not stages:
        raise UsageError("no checks apply: the targets' families and --family do not overlap")
    execution = Execution(
        profile=get_profile(args.profile),
        seed=args.seed,
        isolate=not args.no_isolation,
        timeout=args.timeout,
        corpus=args.corpus,
    )
    return RunPlan(
        out=out,
        execution=execution,
        targets=targets,
        jobs=jobs,
        stages=stages,
        kept=len(done),
        resume=args.resume,
        baseline=baseline,
        baseline_path=args.baseline,
        threshold=args.threshold,
    )


def _baseline(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return writer.load(path)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--baseline {path}: {exc}") from None


def resolve_targets(
    specs: list[str] | None, families: list[str] | None, *, choice: variants.Choice | None = None
):
    """[(spec, Target)]: the spec is what a worker process resolves again. A drop-in class
    becomes one target per variant it declares and the run asks for (dtype x layout)."""
    if not specs:
        return [(t.name, t) for t in builtin() if not families or t.family in families]
    choice = choice or variants.Choice()
    out = []
    for spec in specs:
        family = families[0] if families and len(families) == 1 else None
        try:
            target = resolve(spec, family=family)
        except TargetError as exc:
            raise UsageError(str(exc)) from None
        if "drop_in" not in target.options or "variant" in target.options:
            out.append((spec, target))
            continue
        try:
            expanded = variants.expand(target, choice)
        except ValueError as exc:  # a class attribute that names no dtype or layout
            raise UsageError(f"--target {spec}: {exc}") from None
        if not expanded:
            raise UsageError(
                f"--target {spec}: no variant left: the class supports "
                f"{variants.declared(target.factory, 'varguard_dtypes', variants.DTYPES)} x "
                f"{variants.declared(target.factory, 'varguard_layouts', variants.LAYOUT_VARIANTS)}"
                f" on {variants.declared(target.factory, 'varguard_devices', variants.DEVICES)}; "
                f"widen --dtype/--layout/--device"
            )
        out += [(v.name, v) for v in expanded]
    return out


def plan_jobs(targets, families: list[str] | None, done: set[tuple[str, str]]) -> list[Job]:
    """One job per target: every check of its family not already done."""
    wanted = set(families or FAMILIES)
    jobs = []
    for spec, t in targets:
        if t.family not in wanted:
            continue
        names = tuple(c.name for c in checks_for(t.family) if (t.name, c.name) not in done)
        if names:
            jobs.append(Job.of(t, names, spec=spec))
    return jobs


def plan_stages(args: argparse.Namespace, targets) -> list[PlannedStage]:
    """The stages of this run, in registry order: flags first, then the profile's defaults."""
    planned = []
    for stage in STAGES:
        p = plan_stage(
            stage,
            profile=args.profile,
            flag=getattr(args, stage.name),
            disabled=getattr(args, f"no_{stage.name}"),
            run_targets=targets if args.target else None,
            families=args.family,
        )
        if p is not None:
            planned.append(p)
    return planned


def default_out() -> Path:
    dev = metadata.device()
    return Path("reports") / f"{date.today().isoformat()}-{metadata.device_slug(dev)}"


# --- execute -------------------------------------------------------------------------------------


def execute(run_plan: RunPlan) -> None:
    """Run the checks, each result appended to results.jsonl (and shown) as it finishes."""
    out = run_plan.out
    if not run_plan.resume:
        _clear_stage_folders(out)
    meta = metadata.collect(seed=run_plan.execution.seed, profile=run_plan.execution.profile.name)
    stream = results.ResultStream(out / results.FILENAME, meta, resume=run_plan.resume)
    progress = Progress(run_plan.total)
    kept = f", {run_plan.kept} kept from before" if run_plan.kept else ""
    print(f"writing {out}/ ({run_plan.total} checks{kept})")
    print(table.HEADER, flush=True)

    def on_result(r: Result) -> None:
        stream.append(r)
        if r.status == Status.FAILED and r.case is not None and run_plan.execution.corpus:
            corpus.save(run_plan.execution.corpus, r.check, r.target, r.case)
        progress.advance()
        progress.clear()
        print(table.format_row(r), flush=True)

    run_checks(run_plan.jobs, run_plan.execution, on_start=progress.start, on_result=on_result)
    progress.clear()


def _clear_stage_folders(out: Path) -> None:
    """A fresh run into an old report folder must not show the old run's stages."""
    for stage in STAGES:
        if (out / stage.name).is_dir():
            shutil.rmtree(out / stage.name)
            print(f"removed {out / stage.name}/ of an earlier run (use --resume to keep it)")


# --- write ---------------------------------------------------------------------------------------


def write(run_plan: RunPlan) -> dict:
    """The stages that need no report first, then the report (a stage that reads it, the
    bench, takes its verification from it), then those stages, each followed by the report."""
    out = run_plan.out

    def elapsed() -> float:
        return round(time.monotonic() - run_plan.started, 1)

    for planned in (s for s in run_plan.stages if not s.stage.after_report):
        run_stage(planned, out, resume=run_plan.resume)
    report = writer.write(out, wall_seconds=elapsed())
    for planned in (s for s in run_plan.stages if s.stage.after_report):
        run_stage(planned, out, resume=run_plan.resume)
        report = writer.write(out, wall_seconds=elapsed())
    return report


# --- gate ----------------------------------------------------------------------------------------


def gate(run_plan: RunPlan, report: dict) -> int:
    out = run_plan.out
    bad = [r for r in report["results"] if Status(r["status"]).bad]
    for r in bad:
        print(f"\n--- {r['status'].upper()}: {r['check']} on {r['target']}\n{r['message']}")
        if r.get("repro_path"):
            print(f"  reproduce: python {out / r['repro_path']}")
    s = report["summary"]
    print(
        f"\n{s['passed']} passed, {s['failed']} failed, {s['error']} errors, "
        f"{s['skipped']} skipped; report: {out / 'report.html'}"
    )
    status = EXIT_FAILED if bad else EXIT_OK
    if run_plan.baseline is not None:
        changes = report_gate.compare(run_plan.baseline, report, threshold=run_plan.threshold)
        print(f"\ngate against {run_plan.baseline_path}:")
        for c in changes:
            print("  " + c.line())
        if not changes:
            print("  no changes")
        status = max(status, report_gate.exit_code(changes))
    return status


__all__ = ["RunPlan", "cmd_run", "execute", "gate", "plan", "write"]

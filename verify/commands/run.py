"""`varguard run`, the main job: plan -> execute -> write -> gate.

- :func:`plan` turns the command line into a :class:`RunPlan` (targets, jobs, stages, baseline),
  raising UsageError before any work for anything wrong;
- :func:`execute` runs the jobs' checks, streaming each result to results.jsonl;
- :func:`write` runs the stages and writes the report;
- :func:`gate` prints the failures and the summary and turns them, and the baseline, into the
  exit code.

A SIGINT or SIGTERM during execute or write stops the workers, writes the report of what had
finished (marked interrupted, with the command that continues it) and exits 130 or 143.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path

import torch

from verify import config, corpus, table
from verify.checks import checks_for
from verify.execution import Execution, Job, Shard, available_cores, prestart, run_checks
from verify.exits import EXIT_FAILED, EXIT_OK, Interrupted, UsageError, interruption, stop_signals
from verify.families import FAMILIES
from verify.profiles import Profile, get_profile
from verify.progress import Progress
from verify.report import gate as report_gate
from verify.report import junit, metadata, results, writer
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
    # Every (target, check) of the whole run, unsharded, in plan order: the report's order.
    pairs: list[tuple[str, str]] = field(default_factory=list)
    shard: Shard | None = None
    junit_xml: Path | None = None
    config_path: Path | None = None
    argv: list[str] = field(default_factory=list)  # the command as typed (for --resume)
    started: float = field(default_factory=time.monotonic)

    @property
    def total(self) -> int:
        return sum(len(j.checks) for j in self.jobs)


def cmd_run(args: argparse.Namespace) -> int:
    if args.list:
        return list_targets()
    run_plan = plan(args)
    if args.plan:
        return show_plan(run_plan)
    _require_device(run_plan.execution.profile)
    try:
        with stop_signals():
            execute(run_plan)
            report = write(run_plan)
    except KeyboardInterrupt as exc:
        return interrupted(run_plan, interruption(exc))
    write_junit(run_plan, report)
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
    config_path = config.apply(args)  # [tool.varguard] fills what the command line left unset
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout={args.timeout}: give a positive number of seconds")
    workers = _workers(args)
    shard = _shard(args.shard)
    baseline = _baseline(args.baseline)
    choice = variants.Choice(
        dtypes=tuple(args.dtype) if args.dtype else None,
        layouts=tuple(args.layout) if args.layout else None,
        device=args.device,
    )
    profile = get_profile(args.profile)
    targets = resolve_targets(args.target, args.family, choice=choice, profile=profile)
    stages = plan_stages(args, targets)
    if not args.no_isolation and not args.plan:
        prestart()  # the workers' fork server imports the harness while this plans the checks
    out = args.out or default_out()
    stream_path = out / results.FILENAME
    if args.resume and not stream_path.exists():
        raise UsageError(f"--resume: no {stream_path} to continue; run without --resume first")
    done = results.done_pairs(stream_path) if args.resume else set()
    everything = plan_jobs(targets, args.family)
    if not everything and not stages:
        raise UsageError("no checks apply: the targets' families and --family do not overlap")
    mine = everything
    if shard:
        mine = shard.take(everything)
        stages = shard_stages(stages, shard)
    jobs = [
        replace(j, checks=rest)
        for j in mine
        if (rest := tuple(c for c in j.checks if (j.target, c) not in done))
    ]
    execution = Execution(
        profile=profile,
        seed=args.seed,
        isolate=not args.no_isolation,
        workers=workers,
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
        pairs=[(j.target, c) for j in everything for c in j.checks],
        shard=shard,
        junit_xml=args.junit_xml,
        config_path=config_path,
        argv=metadata.command_argv(sys.argv),
    )


def _workers(args: argparse.Namespace) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: give a number of worker processes, 1 or more")
    if args.no_isolation:
        if args.jobs is not None and args.jobs > 1:
            raise UsageError(
                f"--jobs {args.jobs} runs worker processes, --no-isolation runs in this process; "
                "drop one of them"
            )
        return 1
    return args.jobs or available_cores()


def _shard(text: str | None) -> Shard | None:
    if text is None:
        return None
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _baseline(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return writer.load(path)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--baseline {path}: {exc}") from None


def resolve_targets(
    specs: list[str] | None,
    families: list[str] | None,
    *,
    choice: variants.Choice | None = None,
    profile: Profile | None = None,
):
    """[(spec, Target)]: the spec is what a worker process resolves again. A drop-in class
    becomes one target per variant it declares and the run asks for (dtype x layout). With no
    specs, the built-in targets the profile selects (all, unless it names a device)."""
    if not specs:
        return [
            (t.name, t)
            for t in builtin()
            if (not families or t.family in families) and (profile is None or selects(profile, t))
        ]
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


def selects(profile: Profile, target: Target) -> bool:
    """Whether a run with no --target takes this built-in target under ``profile``."""
    if profile.device is None:
        return True
    if not target.runs_on(profile.device):
        return False
    is_kernel = "triton" in target.requires  # the project's own kernels: every family
    if is_kernel or target.name in profile.extra_targets:
        return True
    return profile.families is None or target.family in profile.families


def plan_jobs(targets, families: list[str] | None) -> list[Job]:
    """One job per target: every check of its family."""
    wanted = set(families or FAMILIES)
    return [
        Job.of(t, [c.name for c in checks_for(t.family)], spec=spec)
        for spec, t in targets
        if t.family in wanted
    ]


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


def shard_stages(stages: list[PlannedStage], shard: Shard) -> list[PlannedStage]:
    """A shard's share of the stages: round-robin over them like the checks, so that the long
    ones (ResNet-50 training) land on different machines. A stage that reads the report (the
    bench) would find only this shard's checks there: it verifies what it times itself."""
    return [replace(p, verified=False) for i, p in enumerate(stages) if shard.owns(i)]


def default_out() -> Path:
    dev = metadata.device()
    return Path("reports") / f"{date.today().isoformat()}-{metadata.device_slug(dev)}"


def show_plan(run_plan: RunPlan) -> int:
    """`run --plan`: what the run would do, without doing it."""
    prof = run_plan.execution.profile
    print(
        f"profile {prof.name}: {prof.examples} cases per check ({prof.compiled_examples} for "
        f"compiled targets), at most {prof.max_elements} elements a case, "
        f"{prof.statistical_samples} samples per statistical test"
        + (f", device {prof.device}" if prof.device else "")
    )
    print(f"out: {run_plan.out}/; {run_plan.total} checks on {len(run_plan.jobs)} targets")
    for job in run_plan.jobs:
        why = job.resolved.unavailable() if job.resolved else None
        note = f"  [skipped here: {why}]" if why else ""
        print(f"  target {job.target} ({len(job.checks)} checks){note}: {', '.join(job.checks)}")
    for p in in_running_order(run_plan.stages):
        if p.skipped:
            print(f"  stage {p.name}: skipped ({p.skipped})")
        else:
            print(f"  stage {p.name}: varguard {p.name} {shlex.join(p.argv(run_plan.out))}")
    return EXIT_OK


def _require_device(profile: Profile) -> None:
    """A profile made for a device refuses, before any work, a machine without it."""
    if profile.device == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"--profile {profile.name} runs the CUDA targets, and this machine has no CUDA GPU "
            f"(torch {torch.__version__}); use --profile quick or standard here, or --plan to see "
            "what it would run"
        )


# --- execute -------------------------------------------------------------------------------------


def execute(run_plan: RunPlan) -> None:
    """Run the checks, each result appended to results.jsonl (and shown) as it finishes."""
    out = run_plan.out
    if not run_plan.resume:
        _clear_stage_folders(out)
    results.clear_interrupted(out)  # this run continues or replaces the interrupted one
    meta = metadata.collect(seed=run_plan.execution.seed, profile=run_plan.execution.profile.name)
    meta.update(
        plan=run_plan.pairs,
        shard=None if run_plan.shard is None else vars(run_plan.shard),
        config=None if run_plan.config_path is None else str(run_plan.config_path),
    )
    stream = results.ResultStream(out / results.FILENAME, meta, resume=run_plan.resume)
    progress = Progress(run_plan.total)
    kept = f", {run_plan.kept} kept from before" if run_plan.kept else ""
    share = f", shard {run_plan.shard}" if run_plan.shard else ""
    workers = run_plan.execution.workers if run_plan.execution.isolate else "in-process"
    print(f"writing {out}/ ({run_plan.total} checks{kept}{share}; workers: {workers})")
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


def in_running_order(stages: list[PlannedStage]) -> list[PlannedStage]:
    """The stages that read the checks' report first (the bench), then the others in registry
    order (depth, convergence)."""
    return sorted(stages, key=lambda s: not s.stage.after_report)


def write(run_plan: RunPlan) -> dict:
    """The checks' report first; then the stages that read it (the bench times what passed),
    then the others (depth, convergence), each followed by the report. A run cut short at a
    deadline (the GPU run's) loses the stages last in line: the longest, convergence, goes last.
    """
    out = run_plan.out

    def elapsed() -> float:
        return round(time.monotonic() - run_plan.started, 1)

    report = writer.write(out, wall_seconds=elapsed())
    for planned in in_running_order(run_plan.stages):
        run_stage(planned, out, resume=run_plan.resume)
        report = writer.write(out, wall_seconds=elapsed())
    return report


def write_junit(run_plan: RunPlan, report: dict) -> None:
    if run_plan.junit_xml is not None:
        junit.write(run_plan.junit_xml, report, folder=run_plan.out)
        print(f"JUnit XML: {run_plan.junit_xml}")


# --- interruption --------------------------------------------------------------------------------


def resume_command(run_plan: RunPlan) -> str:
    """The command that continues this run: as typed, into the same folder, with --resume."""
    argv = list(run_plan.argv) or ["varguard", "run"]
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", str(run_plan.out)]  # the default folder's name has today's date
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(argv)


def interrupted(run_plan: RunPlan, stop: Interrupted) -> int:
    """Write the report of what finished, marked interrupted; say how to continue."""
    out = run_plan.out
    if not (out / results.FILENAME).exists():
        print(f"varguard run: interrupted by {stop.name} before any check ran", file=sys.stderr)
        return stop.exit_code
    finished = len(results.read(out / results.FILENAME)[1])
    resume = resume_command(run_plan)
    results.mark_interrupted(
        out,
        {
            "signal": stop.name,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "finished": finished,
            "planned": run_plan.kept + run_plan.total,
            "resume": resume,
        },
    )
    report = writer.write(out, wall_seconds=round(time.monotonic() - run_plan.started, 1))
    write_junit(run_plan, report)
    s = report["summary"]
    print(
        f"\ninterrupted by {stop.name}: {finished} of {run_plan.kept + run_plan.total} checks "
        f"finished ({s['passed']} passed, {s['failed']} failed, {s['error']} errors, "
        f"{s['skipped']} skipped); report: {out / 'report.html'}"
    )
    print(f"varguard run: interrupted by {stop.name}; continue with: {resume}", file=sys.stderr)
    return stop.exit_code


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


__all__ = ["RunPlan", "cmd_run", "execute", "gate", "interrupted", "plan", "write"]

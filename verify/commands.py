"""The harness subcommands: `varguard run`, `varguard gate` and `varguard mutants`."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from datetime import date
from pathlib import Path

from verify.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from verify.families import FAMILIES
from verify.profiles import PROFILES, get_profile

#: Per-check wall-clock limit in isolated runs, by profile (a hung target is killed after it).
TIMEOUTS = {"quick": 300.0, "standard": 900.0, "release": 3600.0}


def add_commands(sub) -> None:
    p = sub.add_parser(
        "run",
        help="verify targets and write a report (the main job)",
        description="Run every check of each target's family, stream results to "
        "OUT/results.jsonl as they finish, and write OUT/report.json, report.md, report.html "
        "and a reproduction script per failure. With no --target, every built-in target is "
        "run; those that cannot run on this machine are reported as skipped with the reason.",
        epilog="Targets: a built-in name (see --list), mutant:NAME, package.module:Name (a "
        "drop-in for torch.nn.BatchNorm2d, or a verify.targets.base.Target), or an entry point "
        "in the 'varguard.targets' group. Exit codes: 0 all passed, 1 a check failed or "
        "errored (or, with --baseline, the gate blocks), 2 usage error.",
    )
    p.add_argument(
        "--target",
        action="append",
        metavar="T",
        help="target to verify (repeatable; default: all built-in targets)",
    )
    p.add_argument(
        "--family",
        action="append",
        choices=FAMILIES,
        help="only these families of checks (repeatable; default: all)",
    )
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="standard",
        help="search effort and stages: quick (CI; checks only), standard (default; then a "
        "2-seed ResNet-50 convergence job and the quick bench), release (deep search, 3 seeds, "
        "every ResNet-50 layer size)",
    )
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    p.add_argument(
        "--out", type=Path, default=None, help="report folder (default reports/<date>-<device>)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out: finished checks are kept",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="REPORT",
        help="gate against this report.json (or its folder): exit 1 on a new failure or drift",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="gate: relative growth of a worst ratio that counts as drift (0.5)",
    )
    p.add_argument(
        "--corpus",
        type=Path,
        default=Path("varguard-corpus"),
        help="regression corpus of counterexamples, replayed first (folder)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="per-check limit in seconds (default by profile: quick 300, "
        "standard 900, release 3600)",
    )
    p.add_argument(
        "--no-isolation",
        action="store_true",
        help="run targets in this process (faster; a crashing target ends the run)",
    )
    for name, what, example in (
        ("converge", "the ResNet-50 convergence job (`varguard converge`)", "--seeds 3"),
        (
            "bench",
            "the kernel benchmarks (`varguard bench`, on the targets that passed)",
            "--quick",
        ),
    ):
        stage = p.add_mutually_exclusive_group()
        stage.add_argument(
            f"--{name}",
            nargs="?",
            const="",
            default=None,
            metavar="OPTIONS",
            help=f"after the checks, run {what} into OUT/{name}/ and show it in the report; "
            f"OPTIONS are its own, as one argument: --{name}='{example}' (default: the "
            f"profile's; with --target, its batch-norm targets)",
        )
        stage.add_argument(
            f"--no-{name}", action="store_true", help=f"no {name} stage, whatever the profile"
        )
    p.add_argument("--list", action="store_true", help="list the built-in targets and exit")
    p.set_defaults(func=cmd_run)

    r = sub.add_parser(
        "report",
        help="write a report folder's report.json, .md and .html again",
        description="Re-read OUT/results.jsonl and the stage folders beside it (converge/, "
        "bench/) and write report.json, report.md, report.html and the repro scripts again: "
        "e.g. after `varguard converge --out OUT/converge` or a bench run into OUT/bench.",
        epilog="Exit codes: 0 every result passed or was skipped, 1 a failure or error, 2 usage.",
    )
    r.add_argument("out", type=Path, metavar="OUT", help="a report folder (holds results.jsonl)")
    r.set_defaults(func=cmd_report)

    g = sub.add_parser(
        "gate",
        help="compare two reports: exit 1 on a new failure or drift",
        description="Compare NEW with the baseline OLD (report.json files or their folders) "
        "and print what changed. Exit 1 when a check that passed now fails or errors, or its "
        "worst error/allowed ratio grew past --threshold.",
    )
    g.add_argument("old", type=Path, help="baseline report.json (or its folder)")
    g.add_argument("new", type=Path, help="new report.json (or its folder)")
    g.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="relative growth of a worst ratio that counts as drift (default 0.5)",
    )
    g.set_defaults(func=cmd_gate)

    m = sub.add_parser(
        "mutants",
        help="run the mutant catalog: every planted bug must be caught",
        description="Run each mutant (a drop-in implementation with one known bug) through its "
        "family's checks and print which checks kill it. Exit 1 if any mutant survives.",
    )
    m.add_argument("--family", action="append", choices=FAMILIES, help="only these families")
    m.add_argument(
        "--profile", choices=sorted(PROFILES), default="quick", help="search effort (default quick)"
    )
    m.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    m.set_defaults(func=cmd_mutants)

    _add_optional(sub)


def _add_optional(sub) -> None:
    for name in STAGES:
        add_stage_command(sub, name)


#: Commands that live beside the harness, each in its own package; `run` can add them as stages.
STAGES = ("converge", "bench")


def add_stage_command(sub, name: str) -> None:
    if name == "converge":
        from verify.converge.command import add_command
    elif name == "bench":
        from verify.bench.command import add_command
    else:
        raise ValueError(f"name={name!r}; use one of {STAGES}")
    add_command(sub)


def resolve_targets(specs: list[str] | None, families: list[str] | None):
    """[(spec, Target)]: the spec is what a worker process resolves again."""
    from verify.targets import TargetError, builtin, resolve

    if not specs:
        return [(t.name, t) for t in builtin() if not families or t.family in families]
    try:
        return [(s, resolve(s)) for s in specs]
    except TargetError as exc:
        raise UsageError(str(exc)) from None


def _default_out() -> Path:
    from verify.report.metadata import device, device_slug

    return Path("reports") / f"{date.today().isoformat()}-{device_slug(device())}"


def cmd_run(args: argparse.Namespace) -> int:
    from verify import table
    from verify.checks import checks_for
    from verify.isolation import Job, run_jobs
    from verify.progress import Progress
    from verify.report import corpus, gate, metadata, results, writer
    from verify.targets import builtin

    if args.list:
        for t in builtin():
            reason = t.unavailable()
            print(
                f"{t.name:32s} {t.family:10s} {t.description}"
                + (f"  [skipped here: {reason}]" if reason else "")
            )
        return EXIT_OK
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout={args.timeout}: give a positive number of seconds")
    baseline = None
    if args.baseline:
        try:
            baseline = writer.load(args.baseline)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"--baseline {args.baseline}: {exc}") from None
    pairs = resolve_targets(args.target, args.family)
    stages = _plan_stages(args, pairs)
    wanted = set(args.family or FAMILIES)
    out = args.out or _default_out()
    stream_path = out / results.FILENAME
    if args.resume and not stream_path.exists():
        raise UsageError(f"--resume: no {stream_path} to continue; run without --resume first")
    done = results.done_pairs(stream_path) if args.resume else set()
    jobs = []
    for spec, t in pairs:
        if t.family not in wanted:
            continue
        names = tuple(c.name for c in checks_for(t.family) if (t.name, c.name) not in done)
        if names:
            jobs.append(Job(spec=spec, target=t.name, family=t.family, checks=names))
    if not jobs and not done and not stages:
        raise UsageError("no checks apply: the targets' families and --family do not overlap")

    if not args.resume:
        _clear_stage_folders(out)
    meta = metadata.collect(seed=args.seed, profile=args.profile)
    stream = results.ResultStream(stream_path, meta, resume=args.resume)
    total = sum(len(j.checks) for j in jobs)
    progress = Progress(total)
    started = time.monotonic()
    print(f"writing {out}/ ({total} checks{f', {len(done)} kept from before' if done else ''})")
    print(table.HEADER, flush=True)

    def on_result(r) -> None:
        stream.append(r)
        if r.status == "failed" and r.counterexample:
            corpus.save(args.corpus, r.check, r.target, _case_of(r))
        progress.advance()
        progress.clear()
        print(table.format_row(r), flush=True)

    timeout = args.timeout or TIMEOUTS[args.profile]
    if args.no_isolation:
        _run_in_process(jobs, pairs, args, progress, on_result)
    else:
        run_jobs(
            jobs,
            profile=args.profile,
            seed=args.seed,
            timeout=timeout,
            corpus_root=str(args.corpus),
            on_start=progress.start,
            on_result=on_result,
        )
    progress.clear()
    report = _run_stages(stages, out, args, started)
    bad = [r for r in report["results"] if r["status"] in ("failed", "error")]
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
    if baseline is not None:
        changes = gate.compare(baseline, report, threshold=args.threshold)
        print(f"\ngate against {args.baseline}:")
        for c in changes:
            print("  " + c.line())
        if not changes:
            print("  no changes")
        status = max(status, gate.exit_code(changes))
    return status


def _clear_stage_folders(out: Path) -> None:
    """A fresh run into an old report folder must not show the old run's stages."""
    import shutil

    for name in STAGES:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
            print(f"removed {out / name}/ of an earlier run (use --resume to keep it)")


def _plan_stages(args: argparse.Namespace, pairs) -> list:
    """The converge and bench stages of this run: flags first, then the profile's defaults (which
    a --family without batchnorm turns off, since both stages are about batch norm)."""
    from verify import stages

    profile = get_profile(args.profile)
    planned = []
    for name in STAGES:
        flag = getattr(args, name)
        defaults = getattr(profile, name)
        if flag is None and args.family and "batchnorm" not in args.family:
            defaults = None
        stage = stages.plan(
            name,
            profile_options=defaults,
            flag=flag,
            disabled=getattr(args, f"no_{name}"),
            run_targets=pairs if args.target else None,
        )
        if stage is not None:
            planned.append(stage)
    return planned


def _run_stages(planned: list, out: Path, args: argparse.Namespace, started: float) -> dict:
    """Converge, then write the report (bench reads its verification from it), then bench, and
    write the report again with the benchmarks in it."""
    from verify import stages
    from verify.report import writer

    def elapsed() -> float:
        return round(time.monotonic() - started, 1)

    for stage in (s for s in planned if s.name == "converge"):
        stages.run(stage, out, resume=args.resume)
    report = writer.write(out, wall_seconds=elapsed())
    for stage in (s for s in planned if s.name == "bench"):
        stages.run(stage, out, resume=args.resume)
        report = writer.write(out, wall_seconds=elapsed())
    return report


def cmd_report(args: argparse.Namespace) -> int:
    from verify.report import results, writer

    if not (args.out / results.FILENAME).exists():
        raise UsageError(
            f"{args.out}: no {results.FILENAME} here; give the folder `varguard run` wrote"
        )
    wall = None
    with contextlib.suppress(FileNotFoundError, ValueError):  # keep the run's wall time
        wall = writer.load(args.out)["run"].get("wall_seconds")
    report = writer.write(args.out, wall_seconds=wall)
    s = report["summary"]
    print(
        f"{s['passed']} passed, {s['failed']} failed, {s['error']} errors, {s['skipped']} "
        f"skipped; report: {args.out / 'report.html'}"
    )
    return EXIT_FAILED if s["failed"] or s["error"] else EXIT_OK


def _case_of(result):
    """The failing case object, kept on the result by run_check for the corpus."""
    return result.case


def _run_in_process(jobs, pairs, args, progress, on_result) -> None:
    from verify.checks import get_check
    from verify.checks.base import run_check
    from verify.report import corpus

    by_spec = dict(pairs)
    profile = get_profile(args.profile)
    for job in jobs:
        target = by_spec[job.spec]
        for name in job.checks:
            progress.start(job.target, name)
            cases = corpus.load(args.corpus, name, target.name)
            on_result(run_check(get_check(name), target, profile, seed=args.seed, corpus=cases))


def cmd_gate(args: argparse.Namespace) -> int:
    from verify.report import gate, writer

    try:
        old, new = writer.load(args.old), writer.load(args.new)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    changes = gate.compare(old, new, threshold=args.threshold)
    for c in changes:
        print(c.line())
    code = gate.exit_code(changes)
    print(f"{len(changes)} changes; " + ("the gate BLOCKS" if code else "the gate passes"))
    return code


def cmd_mutants(args: argparse.Namespace) -> int:
    from verify.mutants import catalog
    from verify.runner import run

    profile = get_profile(args.profile)
    mutants = [m for m in catalog() if not args.family or m.family in args.family]
    survivors = []
    print(f"{'mutant':34s} {'family':10s} killed by", flush=True)
    for mutant in mutants:
        results = run([mutant.target], profile=profile, seed=args.seed)
        killers = [r.check for r in results if r.status == "failed"]
        if not killers:
            survivors.append(mutant)
        shown = ", ".join(killers) if killers else "SURVIVED"
        print(f"{mutant.name:34s} {mutant.family:10s} {shown}", flush=True)
    killed = len(mutants) - len(survivors)
    print(f"\nmutation score: {killed}/{len(mutants)} killed")
    for m in survivors:
        print(f"survived: {m.name}: {m.bug}", file=sys.stderr)
    return EXIT_FAILED if survivors else EXIT_OK


__all__ = ["EXIT_USAGE", "add_commands", "resolve_targets"]

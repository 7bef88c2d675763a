"""The harness subcommands: `varguard run` and `varguard mutants`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from verify.cli import EXIT_FAILED, EXIT_OK, UsageError
from verify.families import FAMILIES
from verify.profiles import PROFILES, get_profile


def add_commands(sub) -> None:
    p = sub.add_parser(
        "run",
        help="verify targets against the oracles and references",
        description="Run every check of each target's family and print a table. With no "
        "--target, every built-in target is run; those that cannot run on this machine are "
        "reported as skipped with the reason.",
        epilog="Targets: a built-in name (see --list), mutant:NAME, package.module:Name (a "
        "drop-in for torch.nn.BatchNorm2d, or a verify.targets.base.Target), or an entry point "
        "in the 'varguard.targets' group. Exit codes: 0 all passed, 1 a check failed or "
        "errored, 2 usage error.",
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
        help="search effort: quick (CI), standard (default), release",
    )
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    p.add_argument(
        "--repro-dir",
        type=Path,
        default=Path("varguard-repro"),
        help="where reproduction scripts of failures are written",
    )
    p.add_argument("--list", action="store_true", help="list the built-in targets and exit")
    p.set_defaults(func=cmd_run)

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


def _resolve_targets(specs: list[str] | None, families: list[str] | None):
    from verify.targets import TargetError, builtin, resolve

    if not specs:
        return [t for t in builtin() if not families or t.family in families]
    try:
        return [resolve(s) for s in specs]
    except TargetError as exc:
        raise UsageError(str(exc)) from None


def cmd_run(args: argparse.Namespace) -> int:
    from verify import runner, table
    from verify.targets import builtin

    if args.list:
        for t in builtin():
            reason = t.unavailable()
            print(
                f"{t.name:24s} {t.family:10s} {t.description}"
                + (f"  [skipped here: {reason}]" if reason else "")
            )
        return EXIT_OK
    targets = _resolve_targets(args.target, args.family)
    profile = get_profile(args.profile)
    print(table.HEADER, flush=True)
    results = runner.run(
        targets,
        profile=profile,
        seed=args.seed,
        families=args.family,
        on_result=lambda r: print(table.format_row(r), flush=True),
    )
    if not results:
        raise UsageError("no checks apply: the targets' families and --family do not overlap")
    details = table.failure_details(results)
    if details:
        print("\n" + details)
        written = _write_repros(results, args.repro_dir)
        if written:
            print(f"\nreproduction scripts: {', '.join(str(p) for p in written)}")
    print(f"\n{table.summary(results)}")
    return runner.exit_status(results)


def _write_repros(results, directory: Path) -> list[Path]:
    paths = []
    for r in results:
        if r.repro:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"repro_{r.check}_{_slug(r.target)}.py"
            path.write_text(r.repro)
            paths.append(path)
    return paths


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


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

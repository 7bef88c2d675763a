"""The `varguard` command line: the parser, and a dispatch to the command that does the work.

The parser is built from torch-free modules only, so `varguard --help` and `varguard theory` start
fast; each subcommand names the function that runs it as "module:function", imported when that
subcommand runs. The stages (verify/stages) bring their own subcommands.

Exit codes (verify.exits): 0 every check passed, 1 a check failed (or a mutant survived, or the
gate blocks), 2 usage error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).

`varguard run`'s options that a project may declare in its pyproject.toml ([tool.varguard],
verify/config.py) default to None here: None means "not given", and the config fills it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from verify import config
from verify.dimensions import DEVICES, DTYPES, LAYOUT_VARIANTS
from verify.exits import EXIT_USAGE, UsageError, interruption
from verify.families import FAMILIES
from verify.profiles import PROFILES
from verify.stages.base import add_subcommand
from verify.stages.registry import STAGES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="varguard",
        description=(
            "Property-based numerical verification of batch norm, residual blocks, weight init "
            "and SELU against SymPy-derived oracles and float64 references."
        ),
        epilog="Exit codes: 0 all passed, 1 a check failed or a mutant survived, 2 usage error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    _add_sweep(sub)
    _add_merge(sub)
    _add_report(sub)
    _add_gate(sub)
    _add_mutants(sub)
    _add_theory(sub)
    for stage in STAGES:
        add_subcommand(sub, stage)
    return parser


def _add_run(sub) -> None:
    p = sub.add_parser(
        "run",
        help="verify targets and write a report (the main job)",
        description="Run every check of each target's family, stream results to "
        "OUT/results.jsonl as they finish, and write OUT/report.json, report.md, report.html "
        "and a reproduction script per failure. With no --target, every built-in target is "
        "run; those that cannot run on this machine are reported as skipped with the reason.",
        epilog="Targets: a built-in name (see --list), mutant:NAME, package.module:Name (a "
        "drop-in class, e.g. for torch.nn.BatchNorm1d/2d/3d, LayerNorm, RMSNorm or GroupNorm, "
        "checked as one target per dtype and layout variant, pkg.mod:Name[float16, "
        "channels_last]; or a verify.targets.base.Target), or an entry point in the "
        "'varguard.targets' group. Options not given here are read from [tool.varguard] in "
        "./pyproject.toml (or --config), then take their defaults. Exit codes: 0 all passed, 1 "
        "a check failed or errored (or, with --baseline, the gate blocks), 2 usage error, "
        "130/143 interrupted by SIGINT/SIGTERM (the report of what finished is written, marked "
        "interrupted, with the --resume command).",
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
        help="only these families of checks (repeatable; default: all); with one family, a "
        "--target class is taken as that family's drop-in",
    )
    p.add_argument(
        "--dtype",
        action="append",
        choices=DTYPES,
        help="check a drop-in class (module:Name) only in these dtypes (repeatable; default: "
        "every one the class declares in varguard_dtypes, else all four)",
    )
    p.add_argument(
        "--layout",
        action="append",
        choices=tuple(LAYOUT_VARIANTS),
        help="check a drop-in class only with these input layouts (repeatable; strided means "
        "strided, expanded and offset views; default: every one the class declares)",
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="where a drop-in class runs (default cpu; cuda needs a GPU)",
    )
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="search effort and stages: quick (CI; checks and the depth curves), standard "
        "(default; then a 2-seed ResNet-50 convergence job and the quick bench), release (deep "
        "search, 3 seeds, every ResNet-50 layer size)",
    )
    p.add_argument("--seed", type=int, help=f"Hypothesis seed (default {config.DEFAULTS['seed']})")
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
        help="gate: relative growth of a worst ratio that counts as drift "
        f"(default {config.DEFAULTS['threshold']})",
    )
    p.add_argument(
        "--corpus",
        type=Path,
        help="regression corpus of counterexamples, replayed first (folder; default "
        f"{config.DEFAULTS['corpus']})",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="per-check limit in seconds, fixed (default: derived, 20x what the same check "
        "took on the family's reference target in this run, at least 45 s; before the "
        "reference has run it, and for targets that compile (torch.compile, Triton), the "
        "profile's: "
        + ", ".join(f"{name} {prof.timeout:g}" for name, prof in PROFILES.items())
        + ")",
    )
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="worker processes running targets side by side, one torch thread each, so that "
        "the report is the same for any N (default: the cores available to this process)",
    )
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="run only the K-th of N deterministic shares of the checks (round-robin over the "
        "planned (target, check) pairs; the stages are shared out the same way); combine the "
        "shards' folders with `varguard merge`",
    )
    p.add_argument(
        "--junit-xml",
        type=Path,
        metavar="PATH",
        help="also write the results as JUnit XML (one testcase per target and check)",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="PYPROJECT",
        help="read [tool.varguard] from this file (default: ./pyproject.toml, if any)",
    )
    p.add_argument(
        "--no-isolation",
        action="store_true",
        help="run targets in this process (faster; a crashing target ends the run)",
    )
    for stage in STAGES:
        group = p.add_mutually_exclusive_group()
        in_profiles = [name for name, opts in stage.profiles.items() if opts is not None]
        group.add_argument(
            f"--{stage.name}",
            nargs="?",
            const="",
            default=None,
            metavar="OPTIONS",
            help=f"after the checks, run `varguard {stage.name}` into OUT/{stage.name}/ and show "
            f"it in the report; OPTIONS are its own, as one argument: --{stage.name}="
            f"'{stage.example}' (default: the profile's; in {', '.join(in_profiles) or 'none'})",
        )
        group.add_argument(
            f"--no-{stage.name}",
            action="store_true",
            help=f"no {stage.name} stage, whatever the profile",
        )
    p.add_argument("--list", action="store_true", help="list the built-in targets and exit")
    p.add_argument(
        "--plan",
        action="store_true",
        help="print what the run would do (each target with its checks, each stage with its "
        "options, the profile's effort) and exit without running it",
    )
    p.set_defaults(command_function="verify.commands.run:cmd_run")


def _add_sweep(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run the same verification at many seeds: the false-alarm measure",
        description="Run `varguard run` once per Hypothesis seed, each into OUT/seed-S, then "
        "write OUT/sweep.json and OUT/sweep.md: every failure with its seed and reproduction "
        "script, and each target's checks, cases and worst error/allowed ratio over all seeds. "
        "Correct implementations must fail at no seed. A seed already complete in OUT is not "
        "run again and an interrupted one is resumed: after a stop, run the same command again.",
        epilog="Example: varguard sweep --seeds 0-19 --out sweep -- --profile quick --no-depth "
        "--family layernorm. Exit codes: 0 no failure at any seed, 1 a failure or error, 2 "
        "usage error, 130/143 interrupted (the summary is still written).",
    )
    p.add_argument(
        "--seeds",
        required=True,
        metavar="SEEDS",
        help="the seeds: a range A-B (both included), a comma list, or both (0-9,15)",
    )
    p.add_argument("--out", type=Path, required=True, help="the sweep folder")
    p.add_argument(
        "run_options",
        nargs=argparse.REMAINDER,
        metavar="-- RUN OPTIONS",
        help="options for each `varguard run` (all but --seed, --out, --resume, --shard)",
    )
    p.set_defaults(command_function="verify.commands.sweep:cmd_sweep")


def _add_merge(sub) -> None:
    m = sub.add_parser(
        "merge",
        help="combine report folders (e.g. the shards of one run) into one report",
        description="Combine the report folders of one run, e.g. `varguard run --shard K/N` on "
        "several machines, into OUT: the results, the stage folders and the reproduction "
        "scripts, then report.json, report.md and report.html. Folders from different varguard "
        "versions or git revisions, profiles or seeds are refused. A (target, check) present "
        "in several folders keeps the result that ran (not skipped), a failure before a pass.",
        epilog="Exit codes: 0 every result passed or was skipped, 1 a failure or error, 2 usage.",
    )
    m.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="report folders")
    m.add_argument("--out", type=Path, required=True, help="the merged report folder")
    m.add_argument(
        "--junit-xml", type=Path, metavar="PATH", help="also write the merged results as JUnit XML"
    )
    m.set_defaults(command_function="verify.commands.merge:cmd_merge")


def _add_report(sub) -> None:
    r = sub.add_parser(
        "report",
        help="write a report folder's report.json, .md and .html again",
        description="Re-read OUT/results.jsonl and the stage folders beside it ("
        + ", ".join(f"{s.name}/" for s in STAGES)
        + ") and write report.json, report.md, report.html and the repro scripts again: e.g. "
        "after `varguard converge --out OUT/converge` or a bench run into OUT/bench.",
        epilog="Exit codes: 0 every result passed or was skipped, 1 a failure or error, 2 usage.",
    )
    r.add_argument("out", type=Path, metavar="OUT", help="a report folder (holds results.jsonl)")
    r.set_defaults(command_function="verify.commands.report:cmd_report")


def _add_gate(sub) -> None:
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
    g.set_defaults(command_function="verify.commands.gate:cmd_gate")


def _add_mutants(sub) -> None:
    m = sub.add_parser(
        "mutants",
        help="run the mutant catalog: every planted bug must be caught",
        description="Run each mutant (a drop-in implementation with one known bug) through its "
        "family's checks, in a worker process, up to the first check that kills it; print that "
        "check, the cases it took, and whether a fixed known case or the search found it. Exit "
        "1 if any mutant survives.",
    )
    m.add_argument("--family", action="append", choices=FAMILIES, help="only these families")
    m.add_argument(
        "--profile", choices=sorted(PROFILES), default="quick", help="search effort (default quick)"
    )
    m.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    m.add_argument("--mutant", action="append", metavar="NAME", help="only these mutants")
    m.add_argument(
        "--no-known-cases",
        action="store_true",
        help="leave the checks' fixed known cases out: the search alone (the honest measure of "
        "how far it reaches)",
    )
    m.add_argument(
        "--all-checks",
        action="store_true",
        help="run every check of each mutant, not only up to the first that kills it",
    )
    m.set_defaults(command_function="verify.commands.mutants:cmd_mutants")


def _add_theory(sub) -> None:
    p = sub.add_parser(
        "theory",
        help="print the derived oracles (value, formula, source)",
        description="Derive every oracle in theory/ and print it with its value, formula and "
        "citation.",
    )
    p.add_argument(
        "--format",
        choices=("markdown", "json", "latex"),
        default="markdown",
        help="output format (default: markdown)",
    )
    p.add_argument(
        "--digits",
        type=int,
        default=16,
        help="significant digits of each value (json always gives at least 30)",
    )
    p.set_defaults(command_function="verify.commands.theory:cmd_theory")


def command_function(dotted: str):
    """The function a subcommand names as "module:function"."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return command_function(args.command_function)(args)
    except UsageError as exc:
        print(f"varguard {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # a command that writes a partial report does it itself
        stop = interruption(exc)
        print(f"varguard: interrupted ({stop.name})", file=sys.stderr)
        return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())

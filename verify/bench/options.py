"""The options of ``varguard bench`` and their validation, free of torch: the command line and
`varguard run --bench='...'` check them before anything heavy is imported."""

from __future__ import annotations

import argparse
from pathlib import Path

from verify.bench.layers import OPS
from verify.exits import UsageError
from verify.profiles import PROFILES

DEFAULT_REFERENCE = "torch-eager"
DEFAULT_THRESHOLD = 0.10


HELP = "time verified targets against a copy's bandwidth (pytest-benchmark)"
DESCRIPTION = (
    "Time batch norm (forward in training and eval, backward in training) and the residual "
    "tail relu(bn(x) + shortcut) for every target that passed verification, at ResNet-50 layer "
    "sizes, with pytest-benchmark. Reports time, the minimum bytes moved, GB/s and the ratio to "
    "a y.copy_(x) of as many bytes timed in the same run, next to the reference target. Writes "
    "OUT/bench.json (pytest-benchmark's JSON, annotated) and OUT/bench.md."
)
EPILOG = (
    "Exit codes: 0 done, 1 a regression past --threshold against --compare (or nothing could "
    "be benchmarked, or a benchmark raised), 2 usage error."
)


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``varguard bench``."""
    p.add_argument(
        "--target",
        action="append",
        metavar="T",
        help="batch-norm target to time (repeatable; default: every one that can run here; "
        "Triton targets under the interpreter only when named)",
    )
    p.add_argument(
        "--op",
        action="append",
        choices=_ops(),
        help="operation (repeatable; default: all)",
    )
    p.add_argument(
        "--quick", action="store_true", help="two layer sizes, and a small batch on the CPU"
    )
    p.add_argument(
        "--size",
        action="append",
        metavar="NxCxHxW",
        type=_shape,
        help="time this shape instead of ResNet-50's layers (repeatable)",
    )
    p.add_argument(
        "--batch", type=int, default=None, help="batch size N (default: 32 on a GPU, 8 on CPU)"
    )
    p.add_argument(
        "--reference",
        default=DEFAULT_REFERENCE,
        help=f"target every result is compared with (default {DEFAULT_REFERENCE})",
    )
    p.add_argument(
        "--verified",
        type=Path,
        metavar="REPORT",
        help="take verification from this `varguard run` report.json (or folder) instead of "
        "running the checks",
    )
    p.add_argument(
        "--profile",
        default="quick",
        choices=sorted(PROFILES),
        help="profile of the checks run first without --verified (default quick)",
    )
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed of those checks")
    p.add_argument(
        "--out", type=Path, default=None, help="report folder (default reports/bench-<device>)"
    )
    p.add_argument(
        "--compare",
        type=Path,
        metavar="OLD",
        help="an old bench.json (or folder): exit 1 if an operation got slower past --threshold",
    )
    p.add_argument(
        "--any-machine",
        action="store_true",
        help="--compare even when OLD was timed on another device or thread count",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"relative slowdown that counts as a regression (default {DEFAULT_THRESHOLD})",
    )
    p.add_argument("--min-rounds", type=int, default=5, help="pytest-benchmark rounds at least (5)")
    p.add_argument(
        "--max-time",
        type=float,
        default=1.0,
        help="pytest-benchmark seconds per benchmark, roughly (1.0)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads while timing (default: torch's choice); 1 keeps a shared "
        "machine's other load from stalling OpenMP barriers",
    )


def _ops() -> list[str]:
    return list(OPS)


def _shape(text: str) -> tuple[int, int, int, int]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"--size {text!r}: give N x C x H x W as four positive integers, e.g. 8x64x56x56"
        )
    return dims


def check_args(args: argparse.Namespace) -> None:
    if args.threshold <= 0:
        raise UsageError(f"--threshold={args.threshold}: give a positive fraction, e.g. 0.1")
    if args.min_rounds < 1:
        raise UsageError(f"--min-rounds={args.min_rounds}: give at least 1")
    if args.max_time <= 0:
        raise UsageError(f"--max-time={args.max_time}: give a positive number of seconds")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads={args.threads}: give at least 1")
    if args.batch is not None and args.batch < 2:
        raise UsageError(f"--batch={args.batch}: training batch norm needs a batch of 2 or more")

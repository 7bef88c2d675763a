"""The options of ``varguard bench`` and their validation, free of torch: the command line and
`varguard run --bench='...'` check them before anything heavy is imported."""

from __future__ import annotations

import argparse
from pathlib import Path

from verify.bench.families import all_ops, benches
from verify.exits import UsageError
from verify.families import REFERENCE_TARGETS
from verify.profiles import PROFILES

DEFAULT_THRESHOLD = 0.10


HELP = "time verified targets against a copy's bandwidth (pytest-benchmark)"
DESCRIPTION = (
    "Time the normalisation kernels of every family with a benchmark (batch norm: training "
    "and eval forward, backward, the residual tail relu(bn(x) + shortcut), at ResNet-50 layer "
    "sizes; layer norm, RMSNorm: training forward and backward at transformer sizes (tokens, "
    "hidden); group norm: the same at diffusion-UNet and ResNet-GN sizes; the pre-norm tail: "
    "residual add + RMSNorm and its backward) for every target that passed verification, with "
    "pytest-benchmark. Reports time, the minimum bytes moved, GB/s and the ratio to a "
    "y.copy_(x) of as many bytes timed in the same run, next to the family's reference target. "
    "Writes OUT/bench.json (pytest-benchmark's JSON, annotated) and OUT/bench.md."
)
EPILOG = (
    "Exit codes: 0 done, 1 a regression past --threshold against --compare (or nothing could "
    "be benchmarked, or a benchmark raised), 2 usage error."
)


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``varguard bench``."""
    p.add_argument(
        "--family",
        action="append",
        choices=_families(),
        help="family to time (repeatable; default: those of the --target targets, else every "
        "family with a benchmark)",
    )
    p.add_argument(
        "--target",
        action="append",
        metavar="T",
        help="target to time, of any family with a benchmark (repeatable; default: every one "
        "of the families that can run here; Triton targets under the interpreter only when "
        "named)",
    )
    p.add_argument(
        "--op",
        action="append",
        choices=_ops(),
        help="operation (repeatable; default: each family's all)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="two sizes per family, and a smaller first dimension on the CPU",
    )
    p.add_argument(
        "--size",
        action="append",
        metavar="AxBx...",
        type=_shape,
        help="time this shape instead of the families' sizes (repeatable): NxCxHxW for batch "
        "and group norm, TOKENSxHIDDEN for the row norms; each family takes those of its rank",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="first dimension: batch N, or tokens for the row norms (default: the family's GPU "
        "size on a GPU, a quarter of it on the CPU, a sixteenth with --quick; at least 2)",
    )
    p.add_argument(
        "--reference",
        action="append",
        metavar="T",
        help="target its family's results are compared with (repeatable, one per family; "
        "default: the family's eager torch target, "
        + ", ".join(REFERENCE_TARGETS[f] for f in _families())
        + ")",
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
    return list(all_ops())


def _families() -> list[str]:
    return list(benches())


def _ranks() -> list[int]:
    return sorted({r for b in benches().values() for r in b.ranks})


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) not in _ranks() or min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"--size {text!r}: give positive integers joined by x, N x C x H x W (e.g. "
            f"8x64x56x56) for batch and group norm, TOKENS x HIDDEN (e.g. 2048x768) for the row "
            f"norms"
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
    sizes = args.size or []
    for fam in args.family or []:
        ranks = benches()[fam].ranks
        if sizes and not any(len(s) in ranks for s in sizes):
            raise UsageError(
                f"--family {fam} with --size: none of the sizes has {fam}'s rank "
                f"({' or '.join(map(str, ranks))}); add one, e.g. "
                f"{'x'.join(str(d) for d in benches()[fam].sizes[0].shape)}"
            )
    families = args.family or list(benches())
    offered = {op for f in families for op in benches()[f].op_names}
    for op in args.op or []:
        if op not in offered:
            raise UsageError(
                f"--op {op}: none of the families timed ({', '.join(families)}) has it; "
                f"they time {', '.join(sorted(offered))}"
            )

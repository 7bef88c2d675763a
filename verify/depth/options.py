"""The options of ``varguard depth``, free of torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from verify.exits import UsageError

HELP = "measure variance and gradient norms through depth against the theory's curves"
DESCRIPTION = (
    "Build deep stacks of torch's own modules and initialisers (Xavier and He with ReLU, LeCun "
    "with SELU, BatchNorm + ReLU, residual streams with and without BatchNorm) and measure the "
    "forward variance and the squared gradient norm at every depth, next to the curves the "
    "theory package derives. Writes OUT/depth.json; the report draws it."
)
EPILOG = "Exit codes: 0 written, 2 usage error."
DEFAULT_DEPTH, DEFAULT_SEED = 20, 0


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--depth", type=int, default=DEFAULT_DEPTH, help=f"layers (default {DEFAULT_DEPTH})"
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="torch seed (default 0)")
    p.add_argument("--out", type=Path, required=True, help="folder to write depth.json into")


def validate(args: argparse.Namespace) -> None:
    if args.depth < 1:
        raise UsageError(f"--depth={args.depth}: give at least 1 layer, e.g. --depth 20")

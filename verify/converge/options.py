"""The options of ``varguard converge`` and their validation, free of torch: the command line
and `varguard run --converge='...'` check them before anything heavy is imported."""

from __future__ import annotations

import argparse
from pathlib import Path

from verify.converge.config import CONTROLS, DATASETS, DEVICES, MODELS, ConvergeConfig
from verify.exits import UsageError

HELP = "train ResNet-50 with a target's BatchNorm and compare with the reference"
DESCRIPTION = (
    "Train the reference ResNet-50 (torchvision v1.5 layout) with the target's BatchNorm in place "
    "of torch's, over K seeds, next to the reference BatchNorm and two controls (no skip "
    "connections; no BatchNorm) on the same data and budget. Checks the initial loss (ln C) and "
    "the residual stream at init against theory, finite values and gradient norms while "
    "training, the held-out accuracy against --threshold, and the target's epochs-to-threshold "
    "against the reference's (one-sided Welch t-test)."
)
EPILOG = (
    "Runs under torchrun too (DistributedDataParallel: gloo on CPU, NCCL + SyncBatchNorm on "
    "GPU): torchrun --nproc_per_node 2 --standalone -m verify.converge.command --target "
    "torch-eager. Exit codes: 0 all gated checks passed, 1 a check failed, 2 usage error."
)


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``varguard converge``."""
    d = ConvergeConfig()
    p.add_argument(
        "--target",
        action="append",
        metavar="T",
        help="BatchNorm target (repeatable): a built-in name, mutant:NAME or module:Name "
        "(default: torch-eager)",
    )
    p.add_argument("--model", choices=MODELS, default=d.model, help="default: resnet50")
    p.add_argument("--data", choices=DATASETS, default=d.data, help="default: digits")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"default: {d.epochs}")
    p.add_argument("--seeds", type=int, default=d.seeds, help=f"K seeds (default: {d.seeds})")
    p.add_argument("--first-seed", type=int, default=d.first_seed, help="default: 0")
    p.add_argument(
        "--threshold",
        type=float,
        default=d.threshold,
        help=f"held-out accuracy to reach (default: {d.threshold})",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=d.alpha,
        help=f"level of the one-sided t-test (default: {d.alpha})",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch (64)")
    p.add_argument("--lr", type=float, default=d.lr, help="one-cycle peak (0.1)")
    p.add_argument("--image-size", type=int, default=d.image_size, help="default: 32")
    p.add_argument("--train-limit", type=int, default=None, help="train on the first N images only")
    p.add_argument(
        "--controls",
        default=",".join(d.controls),
        help=f"comma-separated controls from {{{','.join(CONTROLS)}}}, or 'none' "
        f"(default: {','.join(d.controls)})",
    )
    p.add_argument(
        "--grad-every",
        type=int,
        default=d.grad_every,
        help=f"per-layer gradient norms every k-th step (default: {d.grad_every})",
    )
    p.add_argument("--control-seeds", type=int, default=d.control_seeds, help="default: 1")
    p.add_argument("--device", choices=DEVICES, default=d.device, help="default: auto")
    p.add_argument("--out", type=Path, default=None, help="write converge.json and PNGs here")
    p.add_argument(
        "--bench",
        type=int,
        default=0,
        metavar="STEPS",
        help="also time STEPS steps of this loop against a plain PyTorch loop",
    )
    p.add_argument("--bench-only", action="store_true", help="run the benchmark and exit")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")


def config_from_args(args: argparse.Namespace) -> ConvergeConfig:
    controls = (
        ()
        if args.controls.strip() in ("", "none")
        else tuple(c.strip() for c in args.controls.split(","))
    )
    try:
        return ConvergeConfig(
            targets=args.target or ["torch-eager"],
            model=args.model,
            data=args.data,
            image_size=args.image_size,
            train_limit=args.train_limit,
            epochs=args.epochs,
            seeds=args.seeds,
            first_seed=args.first_seed,
            batch_size=args.batch_size,
            lr=args.lr,
            threshold=args.threshold,
            alpha=args.alpha,
            controls=controls,
            control_seeds=args.control_seeds,
            grad_every=args.grad_every,
            device=args.device,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        raise UsageError(as_flag(str(exc))) from None


#: ConvergeConfig fields that have a flag, in the order a reproduction command gives them.
FLAGS = (
    "model",
    "data",
    "image_size",
    "train_limit",
    "epochs",
    "seeds",
    "first_seed",
    "batch_size",
    "lr",
    "threshold",
    "alpha",
    "controls",
    "control_seeds",
    "grad_every",
    "device",
)


def argv_for(config: dict, *, targets: list[str], controls: bool = True) -> list[str]:
    """The options that train ``targets`` as ``config`` (a converge.json "config") did: what a
    reproduction script passes to :func:`main`. ``controls=False`` leaves the controls out."""
    argv = [a for t in targets for a in ("--target", t)]
    for name in FLAGS:
        value = config.get(name)
        if name == "controls":
            value = ",".join(value) if value and controls else "none"
        if value is None:
            continue
        argv += ["--" + name.replace("_", "-"), str(value)]
    return argv


def as_flag(message: str) -> str:
    """Config errors name fields (train_limit=...); on the command line they are flags."""
    from dataclasses import fields

    name = message.split("=", 1)[0]
    if name in {f.name for f in fields(ConvergeConfig)} | {"target"}:
        return "--" + name.replace("_", "-") + message[len(name) :]
    return message


def validate(args: argparse.Namespace) -> None:
    config_from_args(args)

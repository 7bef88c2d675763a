"""``varguard converge``: the command line of the convergence job.

Single process: ``varguard converge --target torch-eager``. Several processes (DDP: gloo on
CPU, NCCL and SyncBatchNorm on GPU)::

    torchrun --nproc_per_node 2 --standalone -m verify.converge.command --target torch-eager

Exit codes: 0 every gated check passed (targets and reference), 1 one failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from verify.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from verify.converge.config import CONTROLS, DATASETS, DEVICES, MODELS, ConvergeConfig


def add_command(sub) -> argparse.ArgumentParser:
    """Add the ``converge`` subparser to an argparse subparsers object."""
    p = sub.add_parser(
        "converge",
        help="train ResNet-50 with a target's BatchNorm and compare with the reference",
        description="Train the reference ResNet-50 (torchvision v1.5 layout) with the target's "
        "BatchNorm in place of torch's, over K seeds, next to the reference BatchNorm and two "
        "controls (no skip connections; no BatchNorm) on the same data and budget. Checks the "
        "initial loss (ln C) and the residual stream at init against theory, finite values and "
        "gradient norms while training, the held-out accuracy against --threshold, and the "
        "target's epochs-to-threshold against the reference's (one-sided Welch t-test).",
        epilog="Runs under torchrun too (DistributedDataParallel: gloo on CPU, NCCL + "
        "SyncBatchNorm on GPU): torchrun --nproc_per_node 2 --standalone -m "
        "verify.converge.command --target torch-eager. Exit codes: 0 all gated checks passed, "
        "1 a check failed, 2 usage error.",
    )
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
    p.set_defaults(func=cmd_converge)
    return p


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
        raise UsageError(_as_flag(str(exc))) from None


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


def _as_flag(message: str) -> str:
    """Config errors name fields (train_limit=...); on the command line they are flags."""
    from dataclasses import fields

    name = message.split("=", 1)[0]
    if name in {f.name for f in fields(ConvergeConfig)} | {"target"}:
        return "--" + name.replace("_", "-") + message[len(name) :]
    return message


def cmd_converge(args: argparse.Namespace) -> int:
    from verify.converge import distributed, suite

    cfg = config_from_args(args)
    if args.bench_only and args.bench <= 0:
        args.bench = 20
    try:
        arms = suite.plan(cfg)
        rt = distributed.setup(cfg.device)
    except ValueError as exc:
        raise UsageError(_as_flag(str(exc))) from None
    try:
        if args.bench_only:
            from verify.converge.bench import bench_overhead
            from verify.converge.train import load_data

            result = bench_overhead(cfg, rt, load_data(cfg), steps=args.bench)
            if rt.is_main:
                print(result["message"])
                if args.out:
                    args.out.mkdir(parents=True, exist_ok=True)
                    (args.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
            return EXIT_OK
        summary = suite.run_job(cfg, rt, arms=arms, bench_steps=args.bench)
        if rt.is_main:
            print(format_summary(summary))
            if args.out:
                written = write_report(summary, args.out)
                print(f"\nreport: {', '.join(str(p) for p in written)}")
        if not rt.is_main:
            # Only rank 0 reports; a non-zero exit of another rank would make torchrun stop
            # rank 0 before it has written the report.
            return EXIT_OK
        return EXIT_OK if summary.status == "passed" else EXIT_FAILED
    finally:
        distributed.teardown(rt)


def write_report(summary, out_dir: Path) -> list[Path]:
    from verify.converge.plots import write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "converge.json"
    path.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    table = out_dir / "converge.txt"
    table.write_text(format_summary(summary).lstrip("\n") + "\n")
    return [path, table, *write_plots(summary.to_dict(), out_dir)]


def format_summary(summary) -> str:
    cfg = summary.config
    lines = [
        "",
        f"converge: {cfg['model']} on {cfg['data']}, {cfg['epochs']} epochs, seeds "
        f"{cfg['first_seed']}..{cfg['first_seed'] + cfg['seeds'] - 1}, threshold "
        f"{cfg['threshold']:.1%}, alpha {cfg['alpha']:g}, {summary.environment['device']} x "
        f"{summary.environment['world_size']}",
        f"{'arm':34s} {'role':9s} {'final acc (per seed)':24s} {'epochs->thr':12s} "
        f"{'p':>7s} {'wall':>8s} {'img/s':>7s}  status",
    ]
    for a in summary.arms:
        accs = " ".join(f"{v:.1%}" for v in a.final_acc) or "-"
        reached = " ".join("-" if e is None else str(e) for e in a.epochs_to_threshold) or "-"
        p = a.comparison.values.get("p") if a.comparison else None
        p_str = "-" if p is None else f"{p:.3g}"
        lines.append(
            f"{a.name:34s} {a.role:9s} {accs:24s} {reached:12s} {p_str:>7s} "
            f"{a.wall_s:7.1f}s {a.images_per_s:7.1f}  {a.status}"
            + (f" ({a.note})" if a.note else "")
        )
    failures = []
    for r in summary.runs:
        for c in r.checks:
            if c.status == "failed" and r.role != "control":
                failures.append(f"  FAILED {c.name} on {r.arm} seed {r.seed}: {c.message}")
    for a in summary.arms:
        if a.comparison and a.comparison.status == "failed":
            failures.append(f"  FAILED {a.comparison.name} on {a.name}: {a.comparison.message}")
    if failures:
        lines += ["", "failures:", *failures]
    ref = next((r for r in summary.runs if r.role == "reference"), None)
    if ref:
        lines += ["", f"at init (reference seed {ref.seed}):"]
        lines += [f"  {c.name}: {c.message}" for c in ref.checks if c.name.startswith("init.")]
    if summary.controls:
        lines += ["", "controls (reported, not gated):", *(f"  {c}" for c in summary.controls)]
    if summary.bench:
        lines += ["", summary.bench["message"]]
    lines += ["", f"{summary.status.upper()} in {summary.wall_s:.0f} s"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``converge`` on its own (also the entry point under torchrun)."""
    parser = argparse.ArgumentParser(prog="varguard")
    add_command(parser.add_subparsers(dest="command"))
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "converge":
        argv = ["converge", *argv]
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"varguard converge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

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

from verify.converge import distributed, suite
from verify.converge.bench import bench_overhead
from verify.converge.checks import values_of
from verify.converge.options import as_flag, config_from_args
from verify.converge.plots import write_plots
from verify.converge.results import gated_results
from verify.converge.stage import STAGE
from verify.converge.train import load_data
from verify.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from verify.result import Status
from verify.stages.base import add_subcommand


def cmd_converge(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.bench_only and args.bench <= 0:
        args.bench = 20
    try:
        arms = suite.plan(cfg)
        rt = distributed.setup(cfg.device)
    except ValueError as exc:
        raise UsageError(as_flag(str(exc))) from None
    try:
        if args.bench_only:
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
        return EXIT_OK if summary.status == Status.PASSED else EXIT_FAILED
    finally:
        distributed.teardown(rt)


def write_report(summary, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "converge.json"
    data = summary.to_dict()
    data["results"] = gated_results(data)  # the suite's result records, for the report
    path.write_text(json.dumps(data, indent=2) + "\n")
    table = out_dir / "converge.txt"
    table.write_text(format_summary(summary).lstrip("\n") + "\n")
    return [path, table, *write_plots(data, out_dir)]


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
        p = values_of(a.comparison).get("p") if a.comparison else None
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
                failures.append(f"  FAILED {c.check} on {r.arm} seed {r.seed}: {c.message}")
    for a in summary.arms:
        if a.comparison and a.comparison.status == "failed":
            failures.append(f"  FAILED {a.comparison.check} on {a.name}: {a.comparison.message}")
    if failures:
        lines += ["", "failures:", *failures]
    ref = next((r for r in summary.runs if r.role == "reference"), None)
    if ref:
        lines += ["", f"at init (reference seed {ref.seed}):"]
        lines += [f"  {c.check}: {c.message}" for c in ref.checks if ".init." in c.check]
    if summary.controls:
        lines += ["", "controls (reported, not gated):", *(f"  {c}" for c in summary.controls)]
    if summary.bench:
        lines += ["", summary.bench["message"]]
    lines += ["", f"{summary.status.upper()} in {summary.wall_s:.0f} s"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``converge`` on its own (also the entry point under torchrun)."""
    parser = argparse.ArgumentParser(prog="varguard")
    add_subcommand(parser.add_subparsers(dest="command"), STAGE)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "converge":
        argv = ["converge", *argv]
    args = parser.parse_args(argv)
    try:
        return cmd_converge(args)
    except UsageError as exc:
        print(f"varguard converge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

"""`varguard bench`: verify, plan, time with pytest-benchmark, report, compare.

Wired into the CLI by ``verify.commands`` through :func:`add_command`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

from verify.bench import bench_kernels, results, verification, workloads
from verify.bench.options import check_args
from verify.exits import EXIT_FAILED, EXIT_OK, UsageError
from verify.report import metadata
from verify.resolve import TargetError
from verify.targets import builtin
from verify.targets import triton as triton_targets


def _targets(args: argparse.Namespace):
    """[(Target, named explicitly)], the reference first."""
    names = list(args.target or [])
    try:
        chosen = [workloads.find_target(n) for n in names]
    except TargetError as exc:
        raise UsageError(str(exc)) from None
    for t in chosen:
        if t.family != "batchnorm":
            raise UsageError(
                f"--target {t.name}: a {t.family} target; bench times batch-norm targets (the "
                f"residual tail is timed for each of them)"
            )
    if not names:
        chosen = [t for t in builtin() if t.family == "batchnorm"]
    interpreted = set()
    if not torch.cuda.is_available():
        interpreted = {t.name for t in triton_targets.builtin()}
    out = []
    for t in chosen:
        out.append((t, t.name in names or t.name not in interpreted))
    if args.reference not in {t.name for t, _ in out}:
        try:
            out.insert(0, (workloads.find_target(args.reference), True))
        except TargetError as exc:
            raise UsageError(f"--reference: {exc}") from None
    out.sort(key=lambda tn: tn[0].name != args.reference)
    return out, interpreted


def cmd_bench(args: argparse.Namespace) -> int:
    check_args(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    old = None
    if args.compare is not None:
        try:
            old = results.load(args.compare)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"--compare {args.compare}: {exc}") from None
        other = results.machine_difference(old, metadata.device())
        if other and not args.any_machine:
            raise UsageError(
                f"--compare {args.compare}: timed on another machine or thread count ({other}); "
                "re-time the old version here, or pass --any-machine to compare anyway"
            )
    targets, interpreted = _targets(args)
    ops = args.op or list(workloads.OPS)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = args.size or workloads.default_shapes(
        device=device, quick=args.quick, batch=args.batch
    )
    if args.size and args.batch is not None:
        shapes = [(args.batch, *s[1:]) for s in shapes]
    out = args.out or Path("reports") / f"bench-{device}"

    skipped: list[tuple[str, str, str]] = []
    runnable = []
    for t, named in targets:
        reason = t.unavailable()
        if reason is None and not named:
            reason = (
                "runs under the Triton interpreter here (TRITON_INTERPRET=1): its time would "
                "measure Python, not a kernel; name it with --target to time it anyway"
            )
        if reason:
            skipped += [(t.name, op, reason) for op in ops]
        else:
            runnable.append(t)

    pairs = {pair for t in runnable for op in ops for pair in verification.required(t, op)}
    if args.verified is not None:
        try:
            statuses = verification.from_report(args.verified)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"--verified {args.verified}: {exc}") from None
        evidence = f"verification: {args.verified}"
    else:
        print(f"verifying {len(pairs)} (target, check) pairs at the {args.profile} profile")
        statuses = verification.run_checks(pairs, profile=args.profile, seed=args.seed)
        evidence = f"verification: checks run first at the {args.profile} profile, seed {args.seed}"

    cases = []
    for t in runnable:
        for op in ops:
            why = verification.refusal(t, op, statuses)
            if why:
                skipped.append((t.name, op, why))
                continue
            cases += [workloads.op_case(t, op, s) for s in shapes]
    if not cases:
        print("nothing to benchmark: no (target, operation) passed verification")
        for t, op, why in skipped:
            print(f"  {t} {op}: {why}")
        return EXIT_FAILED

    out.mkdir(parents=True, exist_ok=True)
    json_path = out / results.JSON_NAME
    code = _run_pytest(workloads.plan(cases), json_path, args)
    if not json_path.exists():
        print(f"pytest-benchmark wrote no results (pytest exit code {code})")
        return EXIT_FAILED
    data = results.annotate(json.loads(json_path.read_text()), reference=args.reference)
    meta = metadata.collect(seed=args.seed, profile=args.profile)
    notes = [evidence]
    timed_interpreted = sorted({c["target"] for c in cases} & interpreted)
    if timed_interpreted:
        notes.append(
            f"{', '.join(timed_interpreted)} ran under the Triton interpreter "
            f"(TRITON_INTERPRET=1, numpy on the CPU): those times measure Python, not a kernel"
        )
    if device == "cpu":
        notes.append("no GPU on this machine: the cuDNN / torch.compile-on-GPU comparison and "
                     "the GPU bandwidth goal were not measured")  # fmt: skip
    changes = results.compare(old, data, threshold=args.threshold) if old is not None else None
    data["varguard"] = {
        "meta": meta,
        "reference": args.reference,
        "skipped": [{"target": t, "op": op, "why": why} for t, op, why in skipped],
        "notes": notes,
    }
    json_path.write_text(json.dumps(data, indent=1))
    md = results.markdown(
        data, meta=meta, skipped=skipped, notes=notes, changes=changes, threshold=args.threshold
    )
    (out / results.MD_NAME).write_text(md + "\n")
    print(f"\nwrote {json_path} and {out / results.MD_NAME}")
    status = EXIT_OK if code == 0 else EXIT_FAILED
    if changes is not None:
        bad = [c for c in changes if c.regression]
        print(f"\ncompared with {args.compare} (threshold {args.threshold:.0%}):")
        for c in changes:
            print("  " + c.line())
        print(f"{len(bad)} regression(s)")
        if bad:
            status = EXIT_FAILED
    return status


def _run_pytest(cases: list[dict], json_path: Path, args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="varguard-bench-") as tmp:
        plan_path = Path(tmp) / "plan.json"
        workloads.save_plan(cases, plan_path)
        previous = os.environ.get(bench_kernels.PLAN_ENV)
        os.environ[bench_kernels.PLAN_ENV] = str(plan_path)
        try:
            return int(
                pytest.main(
                    [
                        bench_kernels.__file__,
                        "-q",
                        "-p",
                        "no:cacheprovider",
                        # The bench draws no Hypothesis examples; in a process that just ran
                        # the checks, Hypothesis' plugin would only warn about it.
                        "-p",
                        "no:hypothesispytest",
                        "-W",
                        "ignore::pytest.PytestAssertRewriteWarning",
                        f"--benchmark-json={json_path}",
                        f"--benchmark-min-rounds={args.min_rounds}",
                        f"--benchmark-max-time={args.max_time}",
                        "--benchmark-disable-gc",
                        "--benchmark-sort=name",
                        "--benchmark-columns=min,median,max,rounds",
                    ]
                )
            )
        finally:
            if previous is None:
                os.environ.pop(bench_kernels.PLAN_ENV, None)
            else:
                os.environ[bench_kernels.PLAN_ENV] = previous


__all__ = ["cmd_bench"]

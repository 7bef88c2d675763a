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
from verify.bench.families import benches
from verify.bench.options import check_args
from verify.exits import EXIT_FAILED, EXIT_OK, UsageError
from verify.families import REFERENCE_TARGETS
from verify.report import metadata
from verify.resolve import TargetError
from verify.targets import builtin
from verify.targets.base import Target


def _named(args: argparse.Namespace) -> list[Target]:
    """The --target targets, each of a family with a benchmark (and of --family, if given)."""
    # One --family says which drop-in a user's class that subclasses no declared base is.
    family = args.family[0] if args.family and len(args.family) == 1 else None
    try:
        chosen = [workloads.find_target(n, family=family) for n in args.target or []]
    except TargetError as exc:
        raise UsageError(str(exc)) from None
    for t in chosen:
        if t.family not in benches():
            raise UsageError(
                f"--target {t.name}: a {t.family} target; bench times targets of "
                f"{', '.join(benches())} (batch norm's residual tail is timed for each batch "
                f"norm)"
            )
        if args.family and t.family not in args.family:
            raise UsageError(
                f"--target {t.name}: a {t.family} target, and --family is "
                f"{', '.join(args.family)}; add --family {t.family} or leave the target out"
            )
    return chosen


def _families(args: argparse.Namespace, named: list[Target]) -> list[str]:
    """The families timed, in FAMILIES order: --family, else the named targets', else all of
    them (with --size: those that take a shape of its rank)."""
    wanted = set(args.family or [t.family for t in named] or benches())
    if args.size and not (args.family or named):
        wanted = {f for f in wanted if any(len(s) in benches()[f].ranks for s in args.size)}
    return [f for f in benches() if f in wanted]


def _references(args: argparse.Namespace, families: list[str]) -> tuple[dict, list[str]]:
    """({family: its reference target's name}, notes): each family's eager torch target
    (verify.families.REFERENCE_TARGETS) unless a --reference of that family replaces it."""
    refs = {f: REFERENCE_TARGETS[f] for f in families}
    notes = []
    for name in args.reference or []:
        try:
            t = workloads.find_target(name)
        except TargetError as exc:
            raise UsageError(f"--reference: {exc}") from None
        if t.family in refs:
            refs[t.family] = t.name
        else:
            # A profile names one reference (the GPU run: cuda-cudnn) whatever families a
            # run narrows the bench to: say so, do not refuse the stage.
            notes.append(f"--reference {name}: a {t.family} target, and {t.family} is not "
                         f"benchmarked in this run")  # fmt: skip
    return refs, notes


def _targets(args: argparse.Namespace):
    """([(Target, named explicitly)], the references first; interpreted names; references by
    family; notes)."""
    named = _named(args)
    families = _families(args, named)
    references, notes = _references(args, families)
    chosen = named or [t for t in builtin() if t.family in families]
    # Without a GPU the Triton kernels run under the interpreter: timed only when named.
    interpreted = set()
    if not torch.cuda.is_available():
        interpreted = {t.name for t in builtin() if "triton" in t.requires}
    names = {t.name for t in named}
    out = [(t, t.name in names or t.name not in interpreted) for t in chosen]
    for family, ref in references.items():
        if ref not in {t.name for t, _ in out}:
            try:
                out.insert(0, (workloads.find_target(ref, family=family), True))
            except TargetError as exc:
                raise UsageError(f"--reference: {exc}") from None
    refs = set(references.values())
    out.sort(key=lambda tn: tn[0].name not in refs)
    return out, interpreted, references, notes


def _shapes(args: argparse.Namespace, family: str, device: str) -> list[tuple]:
    """The shapes ``family`` is timed at: the --size shapes of its rank, else its own sizes."""
    if args.size:
        ranks = benches()[family].ranks
        shapes = [s for s in args.size if len(s) in ranks]
        if args.batch is not None:
            shapes = [(args.batch, *s[1:]) for s in shapes]
        return shapes
    return workloads.default_shapes(
        family=family, device=device, quick=args.quick, batch=args.batch
    )


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
    targets, interpreted, references, notes = _targets(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = {f: _shapes(args, f, device) for f in references}
    out = args.out or Path("reports") / f"bench-{device}"

    def ops_of(t: Target) -> list[str]:
        mine = benches()[t.family].op_names
        return [op for op in mine if op in args.op] if args.op else list(mine)

    skipped: list[tuple[str, str, str]] = []
    runnable = []
    for t, named in targets:
        reason = t.unavailable()
        if reason is None and not named:
            reason = (
                "runs under the Triton interpreter here (TRITON_INTERPRET=1): its time would "
                "measure Python, not a kernel; name it with --target to time it anyway"
            )
        if reason is None and not shapes[t.family]:
            reason = f"no --size of a {t.family} rank ({benches()[t.family].axes})"
        if reason:
            skipped += [(t.name, op, reason) for op in ops_of(t)]
        else:
            runnable.append(t)

    pairs = {pair for t in runnable for op in ops_of(t) for pair in verification.required(t, op)}
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
        for op in ops_of(t):
            why = verification.refusal(t, op, statuses)
            if why:
                skipped.append((t.name, op, why))
                continue
            cases += [workloads.op_case(t, op, s) for s in shapes[t.family]]
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
    data = results.annotate(json.loads(json_path.read_text()), references=references)
    meta = metadata.collect(seed=args.seed, profile=args.profile)
    notes = [evidence, *notes]
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
        "families": list(references),
        "references": references,
        # One family: its reference, where readers of single-family runs look for it.
        "reference": next(iter(references.values())) if len(references) == 1 else None,
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
        # A bench started from a pytest-xdist worker (the project's tests) is not itself
        # distributed; pytest-benchmark reads this variable and would disable the timings.
        worker = os.environ.pop("PYTEST_XDIST_WORKER", None)
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
                        "-p",
                        "no:xdist",
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
            if worker is not None:
                os.environ["PYTEST_XDIST_WORKER"] = worker
            if previous is None:
                os.environ.pop(bench_kernels.PLAN_ENV, None)
            else:
                os.environ[bench_kernels.PLAN_ENV] = previous


__all__ = ["cmd_bench"]

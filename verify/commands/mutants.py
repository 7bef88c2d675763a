"""`varguard mutants`: run the catalog of planted bugs; every one must be caught.

Each mutant runs through its family's checks in a worker process (a mutant that crashes or hangs
costs its checks, not the command), on the one execution path every command shares, until the
first check that kills it (--all-checks: every check). The table says which check killed each,
after how many cases, and whether a fixed known case or the search found it;
--no-known-cases leaves the known cases out, which measures how far the search reaches alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from verify.checks import checks_for
from verify.execution import Execution, Job, run_checks
from verify.exits import EXIT_FAILED, EXIT_OK, UsageError
from verify.mutants import catalog
from verify.profiles import get_profile
from verify.result import Status


def cmd_mutants(args: argparse.Namespace) -> int:
    mutants = [
        m
        for m in catalog()
        if (not args.family or m.family in args.family)
        and (not args.mutant or m.name in args.mutant)
    ]
    unknown = set(args.mutant or ()) - {m.name for m in catalog()}
    if unknown:
        raise UsageError(f"--mutant {', '.join(sorted(unknown))}: no such mutant; see the catalog")
    jobs = [
        Job(
            spec=m.target.name,
            target=m.target.name,
            family=m.family,
            checks=tuple(c.name for c in checks_for(m.family)),
            stop_at_failure=not args.all_checks,
        )
        for m in mutants
    ]
    execution = Execution(
        profile=get_profile(args.profile), seed=args.seed, known_cases=not args.no_known_cases
    )
    results = run_checks(jobs, execution)
    rows, survivors = [], []
    for mutant in mutants:
        mine = [r for r in results if r.target == mutant.target.name]
        kills = [r for r in mine if r.status == Status.FAILED]
        if not kills:
            survivors.append(mutant)
        first = kills[0] if kills else None
        rows.append((mutant, first, [r.check for r in kills]))
    _print(rows, all_checks=args.all_checks)
    killed = [first for _, first, _ in rows if first is not None]
    cases = [r.examples for r in killed]
    by_search = sum(str(r.extra.get("found_by", "")).startswith("search") for r in killed)
    how = "without the fixed known cases" if args.no_known_cases else "known cases first"
    print(f"\nmutation score: {len(killed)}/{len(mutants)} killed ({args.profile} profile, {how})")
    if cases:
        print(
            f"cases to the kill: median {statistics.median(cases):g}, largest {max(cases)}; "
            f"{by_search} found by the search, {len(killed) - by_search} by a fixed case"
        )
    for m in survivors:
        print(f"survived: {m.name}: {m.bug} (shows in: {m.shows_in or '-'})", file=sys.stderr)
    return EXIT_FAILED if survivors else EXIT_OK


def _print(rows, *, all_checks: bool) -> None:
    print(
        f"{'mutant':45s} {'family':10s} {'killed first by':28s} {'cases':>5s} {'found by':10s} "
        "shows in",
        flush=True,
    )
    for mutant, first, kills in rows:
        killer = first.check if first else "SURVIVED"
        cases = str(first.examples) if first else "-"
        found = first.extra.get("found_by", "-") if first else "-"
        print(
            f"{mutant.name:45s} {mutant.family:10s} {killer:28s} {cases:>5s} {found:10s} "
            f"{mutant.shows_in or '-'}",
            flush=True,
        )
        if all_checks and len(kills) > 1:
            print(f"{'':45s} {'':10s} also: {', '.join(kills[1:])}")

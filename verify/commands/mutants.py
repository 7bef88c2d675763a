"""`varguard mutants`: run the catalog of planted bugs; every one must be caught.

Each mutant runs through its family's checks in a worker process (a mutant that crashes or hangs
costs its checks, not the command), on the one execution path every command shares.
"""

from __future__ import annotations

import argparse
import sys

from verify.checks import checks_for
from verify.execution import Execution, Job, run_checks
from verify.exits import EXIT_FAILED, EXIT_OK
from verify.mutants import catalog
from verify.profiles import get_profile
from verify.result import Status


def cmd_mutants(args: argparse.Namespace) -> int:
    mutants = [m for m in catalog() if not args.family or m.family in args.family]
    jobs = [
        Job(
            spec=m.target.name,
            target=m.target.name,
            family=m.family,
            checks=tuple(c.name for c in checks_for(m.family)),
        )
        for m in mutants
    ]
    execution = Execution(profile=get_profile(args.profile), seed=args.seed)
    results = run_checks(jobs, execution)
    survivors = []
    print(f"{'mutant':34s} {'family':10s} killed by", flush=True)
    for mutant in mutants:
        killers = [
            r.check for r in results if r.target == mutant.target.name and r.status == Status.FAILED
        ]
        if not killers:
            survivors.append(mutant)
        shown = ", ".join(killers) if killers else "SURVIVED"
        print(f"{mutant.name:34s} {mutant.family:10s} {shown}", flush=True)
    killed = len(mutants) - len(survivors)
    print(f"\nmutation score: {killed}/{len(mutants)} killed")
    for m in survivors:
        print(f"survived: {m.name}: {m.bug}", file=sys.stderr)
    return EXIT_FAILED if survivors else EXIT_OK

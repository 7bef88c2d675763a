"""`varguard report DIR`: write a report folder's report.json, .md and .html again from the
folder alone (its results.jsonl and stage folders)."""

from __future__ import annotations

import argparse
import contextlib

from verify.exits import EXIT_FAILED, EXIT_OK, UsageError
from verify.report import results, writer


def cmd_report(args: argparse.Namespace) -> int:
    if not (args.out / results.FILENAME).exists():
        raise UsageError(
            f"{args.out}: no {results.FILENAME} here; give the folder `varguard run` wrote"
        )
    wall = None
    with contextlib.suppress(FileNotFoundError, ValueError):  # keep the run's wall time
        wall = writer.load(args.out)["run"].get("wall_seconds")
    report = writer.write(args.out, wall_seconds=wall)
    s = report["summary"]
    print(
        f"{s['passed']} passed, {s['failed']} failed, {s['error']} errors, {s['skipped']} "
        f"skipped; report: {args.out / 'report.html'}"
    )
    return EXIT_FAILED if s["failed"] or s["error"] else EXIT_OK

"""`varguard gate OLD NEW`: compare a run with a stored baseline; exit 1 when the gate blocks."""

from __future__ import annotations

import argparse

from verify.exits import UsageError
from verify.report import gate, writer


def cmd_gate(args: argparse.Namespace) -> int:
    try:
        old, new = writer.load(args.old), writer.load(args.new)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    changes = gate.compare(old, new, threshold=args.threshold)
    for c in changes:
        print(c.line())
    code = gate.exit_code(changes)
    print(f"{len(changes)} changes; " + ("the gate BLOCKS" if code else "the gate passes"))
    return code

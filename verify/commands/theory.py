"""`varguard theory`: print every derived oracle (value, formula, source)."""

from __future__ import annotations

import argparse

from verify.commands.theory_table import render
from verify.exits import EXIT_OK


def cmd_theory(args: argparse.Namespace) -> int:
    print(render(args.format, digits=args.digits))
    return EXIT_OK

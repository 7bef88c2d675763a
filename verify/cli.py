"""The `varguard` command line: one thin function per subcommand, the work lives elsewhere.

Exit codes: 0 every check passed, 1 a check failed (or a mutant survived), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: reported as one line and exit code 2, never a traceback."""


def _cmd_theory(args: argparse.Namespace) -> int:
    from verify.theory_table import render

    print(render(args.format, digits=args.digits))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="varguard",
        description=(
            "Property-based numerical verification of batch norm, residual blocks, weight init "
            "and SELU against SymPy-derived oracles and float64 references."
        ),
        epilog="Exit codes: 0 all passed, 1 a check failed or a mutant survived, 2 usage error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "theory",
        help="print the derived oracles (value, formula, source)",
        description="Derive every oracle in theory/ and print it with its value, formula and "
        "citation.",
    )
    p.add_argument(
        "--format",
        choices=("markdown", "json", "latex"),
        default="markdown",
        help="output format (default: markdown)",
    )
    p.add_argument(
        "--digits",
        type=int,
        default=16,
        help="significant digits of each value (json always gives at least 30)",
    )
    p.set_defaults(func=_cmd_theory)

    _add_harness_commands(sub)
    return parser


def _add_harness_commands(sub) -> None:
    # Imported lazily: `varguard theory` must not pay for importing torch.
    from verify.commands import add_commands

    add_commands(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"varguard {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("varguard: interrupted", file=sys.stderr)
        return 130

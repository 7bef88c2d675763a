"""varguard's harness: targets, strategies, checks, mutants, runner and command line."""

__version__ = "0.1.0"

"""The check registry: one module per family, each exporting CHECKS."""

from __future__ import annotations

from verify.checks.base import Check, CheckResult, Measurement, run_check


def all_checks() -> list[Check]:
    from verify.checks import batchnorm, init, residual, selu

    return [*batchnorm.CHECKS, *init.CHECKS, *selu.CHECKS, *residual.CHECKS]


def checks_for(family: str) -> list[Check]:
    return [c for c in all_checks() if c.family == family]


def get_check(name: str) -> Check:
    for c in all_checks():
        if c.name == name:
            return c
    raise KeyError(f"no check named {name!r}; known: {', '.join(c.name for c in all_checks())}")


__all__ = [
    "Check",
    "CheckResult",
    "Measurement",
    "all_checks",
    "checks_for",
    "get_check",
    "run_check",
]

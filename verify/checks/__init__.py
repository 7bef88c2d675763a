"""The check registry: each family's module here declares ``CHECKS = Checks(family)``; the
registry discovers them."""

from __future__ import annotations

from functools import lru_cache

from verify.checks.base import Check, Checks, Measurement, run_check
from verify.families import discover


@lru_cache(maxsize=1)
def _modules() -> tuple:
    return discover(
        __name__, __path__, declares=lambda m: isinstance(getattr(m, "CHECKS", None), Checks)
    )


def all_checks() -> list[Check]:
    return [c for module in _modules() for c in module.CHECKS]


def checks_for(family: str) -> list[Check]:
    return [c for c in all_checks() if c.family == family]


def get_check(name: str) -> Check:
    for c in all_checks():
        if c.name == name:
            return c
    raise KeyError(f"no check named {name!r}; known: {', '.join(c.name for c in all_checks())}")


__all__ = ["Check", "Checks", "Measurement", "all_checks", "checks_for", "get_check", "run_check"]

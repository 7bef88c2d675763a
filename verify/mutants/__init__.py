"""The mutant catalog: the suite must fail every one of these and pass every real target.

Each family's module here declares ``MUTANTS = Mutants(family)``; the catalog discovers them.
"""

from __future__ import annotations

from functools import lru_cache

from verify.families import discover
from verify.mutants.base import Mutant, Mutants


@lru_cache(maxsize=1)
def _modules() -> tuple:
    return discover(
        __name__, __path__, declares=lambda m: isinstance(getattr(m, "MUTANTS", None), Mutants)
    )


def catalog() -> list[Mutant]:
    return [m for module in _modules() for m in module.MUTANTS]


def get_mutant(name: str) -> Mutant:
    for m in catalog():
        if m.name == name:
            return m
    raise ValueError(
        f"mutant={name!r} is unknown; the catalog has: {', '.join(m.name for m in catalog())}"
    )


__all__ = ["Mutant", "Mutants", "catalog", "get_mutant"]

"""The mutant catalog: the suite must fail every one of these and pass every real target."""

from __future__ import annotations

from verify.mutants.base import Mutant


def catalog() -> list[Mutant]:
    from verify.mutants import batchnorm, init, residual, selu

    return [*batchnorm.MUTANTS, *init.MUTANTS, *selu.MUTANTS, *residual.MUTANTS]


def get_mutant(name: str) -> Mutant:
    for m in catalog():
        if m.name == name:
            return m
    raise ValueError(
        f"mutant={name!r} is unknown; the catalog has: {', '.join(m.name for m in catalog())}"
    )


__all__ = ["Mutant", "catalog", "get_mutant"]

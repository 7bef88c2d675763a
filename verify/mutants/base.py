"""A mutant: a real, known bug planted in an otherwise correct drop-in implementation."""

from __future__ import annotations

from dataclasses import dataclass

from verify.targets.base import Target


@dataclass(frozen=True)
class Mutant:
    name: str
    bug: str  # what is wrong, in one line
    target: Target
    # The checks expected to catch it: documentation for readers, and a test asserts at least
    # one of the family's checks fails.
    caught_by: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        return self.target.family

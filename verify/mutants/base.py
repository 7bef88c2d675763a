"""A mutant: a real, known bug planted in an otherwise correct drop-in implementation.

Each is registered next to its class (or function) with keywords::

    MUTANTS = Mutants("batchnorm", prefix="bn_")

    @MUTANTS.register(name="one_pass_variance", bug="variance as E[x^2] - E[x]^2 in float32",
                      caught_by=("batchnorm.forward",))
    class OnePassVariance(ExplicitBatchNorm2d): ...

and becomes the target ``mutant:bn_one_pass_variance`` of its family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from verify.targets.base import Target


@dataclass(frozen=True)
class Mutant:
    name: str
    bug: str  # what is wrong, in one line
    target: Target
    # The checks expected to catch it: documentation for readers, and a test asserts at least
    # one of the family's checks fails.
    caught_by: tuple[str, ...] = ()
    # The configuration it only shows in (a dimension of the search), for the report.
    shows_in: str = ""

    @property
    def family(self) -> str:
        return self.target.family


class Mutants(Sequence):
    """A family's planted bugs in the order they are declared: its module's ``MUTANTS``."""

    def __init__(self, family: str, *, prefix: str = "") -> None:
        self.family = family
        self.prefix = prefix
        self._mutants: list[Mutant] = []

    def register(
        self,
        *,
        name: str,
        bug: str,
        caught_by: tuple[str, ...],
        options: dict[str, Any] | None = None,
        shows_in: str = "",
        **target_fields: Any,
    ) -> Callable:
        """Decorate the buggy class or function: it becomes the factory of ``mutant:<name>``.
        ``options`` and ``target_fields`` (dtype, memory_format, ...) go to its Target."""
        full = self.prefix + name

        def decorate(factory):
            self._mutants.append(
                Mutant(
                    name=full,
                    bug=bug,
                    caught_by=caught_by,
                    shows_in=shows_in,
                    target=Target(
                        name=f"mutant:{full}",
                        family=self.family,
                        factory=factory,
                        options=options or {},
                        description=f"mutant: {bug}",
                        **target_fields,
                    ),
                )
            )
            return factory

        return decorate

    def __iter__(self) -> Iterator[Mutant]:
        return iter(self._mutants)

    def __len__(self) -> int:
        return len(self._mutants)

    def __getitem__(self, index: int) -> Mutant:
        return self._mutants[index]

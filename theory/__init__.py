"""theory: SymPy derivations, each yielding named oracles with their source.

One module per subject (init, selu, batchnorm, layernorm, rmsnorm, groupnorm, residual, prenorm,
propagation, rounding); each exposes ``oracles() -> list[Oracle]`` and the named functions checks
call. This package gathers the oracles into one registry: ``all_oracles()`` and ``get(name)``.
Names are ``module.quantity``.

An oracle's ``published`` is the value from DESIGN.md's "Oracles to derive" table (or the cited
source), written so it parses: a decimal number, a list of lists of numbers, or a SymPy formula in
the oracle's own symbol names (e.g. ``gain*sqrt(6/(fan_in+fan_out))``).
"""

from __future__ import annotations

from functools import lru_cache

from theory import (
    batchnorm,
    groupnorm,
    init,
    layernorm,
    prenorm,
    propagation,
    residual,
    rmsnorm,
    rounding,
    selu,
)
from theory.oracle import DIGITS, Oracle, evaluate

MODULES = (
    init,
    selu,
    batchnorm,
    layernorm,
    rmsnorm,
    groupnorm,
    residual,
    prenorm,
    propagation,
    rounding,
)

__all__ = ["DIGITS", "MODULES", "Oracle", "all_oracles", "evaluate", "get"]


@lru_cache(maxsize=1)
def _registry() -> dict[str, Oracle]:
    registry: dict[str, Oracle] = {}
    for module in MODULES:
        for oracle in module.oracles():
            if oracle.name in registry:
                raise RuntimeError(
                    f"duplicate oracle name {oracle.name!r} (from {module.__name__})"
                )
            registry[oracle.name] = oracle
    return registry


def all_oracles() -> list[Oracle]:
    """Every oracle of every theory module, in module order (derived once, then cached)."""
    return list(_registry().values())


def get(name: str) -> Oracle:
    """The oracle called ``name``, e.g. ``get("selu.alpha01")``."""
    registry = _registry()
    try:
        return registry[name]
    except KeyError:
        raise KeyError(
            f"no oracle named {name!r}; known names: {', '.join(sorted(registry))}"
        ) from None

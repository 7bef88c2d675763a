"""The catalog of built-in targets, discovered from this package's modules.

Each module that declares targets has a ``builtin() -> list[Target]``; a family's module is named
after it (verify/families.py). verify.resolve turns any target name a user gives into a Target.
"""

from __future__ import annotations

from functools import lru_cache

from verify.families import discover
from verify.targets.base import Target


@lru_cache(maxsize=1)
def catalog_modules() -> tuple:
    """Every module of this package that declares targets (a ``builtin()`` function): each
    family's own first, in FAMILIES order, then the rest (e.g. the Triton kernels) by name."""
    return discover(__name__, __path__, declares=lambda m: callable(getattr(m, "builtin", None)))


def builtin() -> list[Target]:
    return [t for module in catalog_modules() for t in module.builtin()]


def builtin_names() -> list[str]:
    return [t.name for t in builtin()]


def drop_ins() -> list:
    """Every module a user's class can replace (each family module's DROP_INS), first family
    first: a class that subclasses none of them is taken for the first."""
    return [d for module in catalog_modules() for d in getattr(module, "DROP_INS", ())]


__all__ = ["Target", "builtin", "builtin_names", "catalog_modules", "drop_ins"]

"""The families of checks: the one place a family is registered. Kept free of torch so that the
command line starts fast.

A family ``f`` is its name here plus its own files, each discovered by name from this list:

    theory/f.py               derivations and oracles (found by theory/__init__.py)
    reference/f.py            float64 reference implementations
    verify/targets/f.py       the catalog: built-in targets, drop-in base classes
    verify/strategies/f.py    the cases Hypothesis draws, and the data they describe
    verify/adapters/f.py      how a target is run on a case
    verify/checks/f.py        CHECKS = Checks("f"), each check registered next to its code
    verify/mutants/f.py       MUTANTS = Mutants("f"), each planted bug registered next to its class
    tests/                    the family's tests
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from types import ModuleType

FAMILIES = ("batchnorm", "init", "selu", "residual", "layernorm", "rmsnorm", "groupnorm", "prenorm")

#: Each family's reference target: the plain eager implementation every other target of the
#: family is measured against in time. A run schedules it first, and a check's time there sets
#: the limit for the same check on the others (verify/execution.py); a family without one keeps
#: the profile's flat limit.
REFERENCE_TARGETS = {
    "batchnorm": "torch-eager",
    "init": "torch-xavier-uniform",
    "selu": "torch-selu",
    "residual": "torch-basic-inplace",
    "layernorm": "torch-layernorm",
    "rmsnorm": "torch-rmsnorm",
    "groupnorm": "torch-groupnorm",
    "prenorm": "torch-add-rmsnorm",
}


def module_name(layer: str, family: str) -> str:
    """The dotted name of ``family``'s module in ``layer`` (targets, checks, mutants, ...)."""
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not registered; use one of {FAMILIES}")
    return f"verify.{layer}.{family}"


def discover(
    package: str, path: Iterable[str], *, declares: Callable[[ModuleType], bool]
) -> tuple[ModuleType, ...]:
    """The modules of ``package`` (at ``path``) that ``declare`` something (targets, checks,
    mutants): each family's own first, in FAMILIES order, then the others (e.g. the Triton
    kernels' targets) by name."""
    names = [m.name for m in pkgutil.iter_modules(path)]
    ordered = [f for f in FAMILIES if f in names] + sorted(n for n in names if n not in FAMILIES)
    modules = (importlib.import_module(f"{package}.{n}") for n in ordered)
    return tuple(m for m in modules if declares(m))


__all__ = ["FAMILIES", "REFERENCE_TARGETS", "discover", "module_name"]

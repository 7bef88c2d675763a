"""Any target a user names, resolved to a Target: the one resolver the command line, the worker
processes and the reproduction scripts share.

A target is named as
- a built-in name (``torch-eager``; ``varguard run --list`` shows them),
- ``mutant:<name>`` for a planted bug from verify/mutants,
- ``package.module:Name`` for any importable object: a :class:`Target`, or a class that is a
  drop-in for ``torch.nn.BatchNorm2d`` (``torch.nn:BatchNorm2d`` names PyTorch's own),
- or the name of an entry point in the ``varguard.targets`` group, whose object is either.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path

import torch

from verify.mutants import get_mutant
from verify.targets import builtin, builtin_names
from verify.targets.base import Target

ENTRY_POINT_GROUP = "varguard.targets"


class TargetError(ValueError):
    """A target name that cannot be resolved: the message says why and what to do."""


def resolve(spec: str, *, family: str | None = None) -> Target:
    """The target ``spec`` names (see module docstring), or a TargetError saying what to do."""
    if not isinstance(spec, str) or not spec.strip():
        raise TargetError(f"target={spec!r}: give a built-in name, mutant:NAME or module:Name")
    spec = spec.strip()
    for t in builtin():
        if t.name == spec:
            return t
    if spec.startswith("mutant:"):
        return _mutant(spec.removeprefix("mutant:"))
    if ":" in spec:
        return _from_object(spec, _import_object(spec), family)
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if spec in eps:
        return _from_object(spec, eps[spec].load(), family)
    raise TargetError(
        f"target={spec!r} is not a built-in target, a mutant:NAME, an entry point in "
        f"{ENTRY_POINT_GROUP!r} or a module:Name; built-in targets: {', '.join(builtin_names())}"
    )


def _mutant(name: str) -> Target:
    try:
        return get_mutant(name).target
    except ValueError as exc:
        raise TargetError(str(exc)) from None


def _import_object(spec: str):
    module_name, _, attr = spec.partition(":")
    # Like `python -m`, let a user's module in the current directory be found.
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(
            f"target={spec!r}: cannot import module {module_name!r} ({exc}); run from the "
            f"directory that holds it or add that directory to PYTHONPATH"
        ) from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"target={spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _from_object(spec: str, obj, family: str | None) -> Target:
    if isinstance(obj, Target):
        return obj
    if family not in (None, "batchnorm"):
        raise TargetError(
            f"target={spec!r}: a class names a batch-norm target; for family {family!r} expose "
            f"a verify.targets.base.Target object instead"
        )
    if inspect.isclass(obj) and issubclass(obj, torch.nn.Module):
        return Target(
            name=spec,
            family="batchnorm",
            factory=obj,
            description=f"user class {obj.__module__}.{obj.__qualname__}",
        )
    raise TargetError(
        f"target={spec!r} is a {type(obj).__name__}: expected a torch.nn.Module class that is a "
        f"drop-in for torch.nn.BatchNorm2d, or a verify.targets.base.Target"
    )


__all__ = ["ENTRY_POINT_GROUP", "TargetError", "resolve"]

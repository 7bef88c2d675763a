"""Any target a user names, resolved to a Target: the one resolver the command line, the worker
processes and the reproduction scripts share.

A target is named as
- a built-in name (``torch-eager``; ``varguard run --list`` shows them),
- ``mutant:<name>`` for a planted bug from verify/mutants,
- ``package.module:Name`` for any importable object: a :class:`Target`, or a class that is a
  drop-in for one of the modules the families declare (verify.targets.<family>.DROP_INS:
  ``torch.nn.BatchNorm1d/2d/3d``, ...; ``torch.nn:BatchNorm2d`` names PyTorch's own). The class
  resolves to its template (float32, every layout, the CPU); ``[dtype, layout, device]`` after
  the name picks one variant (verify.targets.variants), and `varguard run` checks every variant,
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
from verify.targets import builtin, builtin_names, drop_ins
from verify.targets import variants as variant_of
from verify.targets.base import Target

ENTRY_POINT_GROUP = "varguard.targets"


class TargetError(ValueError):
    """A target name that cannot be resolved: the message says why and what to do."""


def resolve(spec: str, *, family: str | None = None) -> Target:
    """The target ``spec`` names (see module docstring), or a TargetError saying what to do."""
    if not isinstance(spec, str) or not spec.strip():
        raise TargetError(f"target={spec!r}: give a built-in name, mutant:NAME or module:Name")
    spec = spec.strip()
    try:
        base, chosen = variant_of.parse(spec)
    except ValueError as exc:
        raise TargetError(str(exc)) from None
    target = _resolve_base(base, family)
    if not chosen:
        return target
    if "drop_in" not in target.options:
        raise TargetError(
            f"target={spec!r}: variants in brackets apply to a drop-in class (module:Name); "
            f"{base!r} is one implementation already"
        )
    return variant_of.variant(
        target,
        dtype=chosen.get("dtype", "float32"),
        layout=chosen.get("layout", "contiguous"),
        device=chosen.get("device", "cpu"),
    )


def _resolve_base(spec: str, family: str | None) -> Target:
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
    if not (inspect.isclass(obj) and issubclass(obj, torch.nn.Module)):
        raise TargetError(
            f"target={spec!r} is a {type(obj).__name__}: expected a torch.nn.Module class that is "
            f"a drop-in for one of {', '.join(d.title for d in drop_ins())}, or a "
            f"verify.targets.base.Target"
        )
    drop_in = _drop_in_for(spec, obj, family)
    try:
        drop_in.probe(obj)
    except Exception as exc:  # its constructor refuses the module's arguments: no drop-in
        raise TargetError(
            f"target={spec!r}: {obj.__qualname__} is not a drop-in for {drop_in.title}: building "
            f"it with that module's arguments raised {type(exc).__name__}: {exc}"
        ) from None
    return Target(
        name=spec,
        family=drop_in.family,
        factory=obj,
        ranks=drop_in.ranks,
        description=f"user class {obj.__module__}.{obj.__qualname__} (a drop-in for "
        f"{drop_in.title})",
        options={"drop_in": drop_in, "spec": spec},
    )


def _drop_in_for(spec: str, cls: type, family: str | None):
    """The module ``cls`` replaces: the nearest declared base it subclasses, else the first
    drop-in of ``family`` (batch norm's BatchNorm2d when none is named)."""
    declared = [d for d in drop_ins() if family in (None, d.family)]
    for klass in cls.__mro__:
        for d in declared:
            if klass is d.base:
                return d
    if not declared:
        raise TargetError(f"target={spec!r}: family {family!r} declares no drop-in classes")
    return declared[0]


__all__ = ["ENTRY_POINT_GROUP", "TargetError", "resolve"]

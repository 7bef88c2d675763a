"""``[tool.varguard]`` in a project's pyproject.toml: a library declares its `varguard run` once,
so that its CI calls plain ``varguard run``::

    [tool.varguard]
    targets = ["mylib.norm:FastBatchNorm2d"]
    families = ["batchnorm"]
    profile = "quick"
    baseline = "ci/varguard-baseline.json"
    jobs = 2
    timeout = 120
    junit_xml = "reports/varguard.xml"
    converge = false          # a stage: false (not run), true (its default options) or options

The command line overrides every key. The file is ./pyproject.toml, or the one --config names;
relative paths in it are relative to its folder. Torch-free: it runs before the parser's work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verify.exits import UsageError
from verify.families import FAMILIES
from verify.profiles import PROFILES
from verify.stages.registry import STAGES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has no tomllib; pyproject.toml pulls in the backport
    import tomli as tomllib

SECTION = "tool.varguard"


class _Bad(ValueError):
    """A value of the wrong kind; the message says what to give instead."""


def _string(value: Any, base: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad("give a non-empty string")
    return value


def _strings(value: Any, base: Path) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _Bad('give a list of strings, e.g. ["torch-eager"]')
    return list(value)


def _families(value: Any, base: Path) -> list[str]:
    names = _strings(value, base)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise _Bad(f"{unknown} unknown; use some of {list(FAMILIES)}")
    return names


def _profile(value: Any, base: Path) -> str:
    if value not in PROFILES:
        raise _Bad(f"use one of {sorted(PROFILES)}")
    return value


def _integer(value: Any, base: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad("give an integer")
    return value


def _number(value: Any, base: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad("give a number")
    return float(value)


def _path(value: Any, base: Path) -> Path:
    return base / _string(value, base)


@dataclass(frozen=True)
class Option:
    """One key of [tool.varguard]: the `run` option it stands for and its built-in default."""

    key: str
    dest: str  # the attribute of `varguard run`'s parsed arguments
    parse: Callable[[Any, Path], Any]
    default: Any = None  # when neither the command line nor the file gives it


OPTIONS = (
    Option(key="targets", dest="target", parse=_strings),
    Option(key="families", dest="family", parse=_families),
    Option(key="profile", dest="profile", parse=_profile, default="standard"),
    Option(key="seed", dest="seed", parse=_integer, default=0),
    Option(key="out", dest="out", parse=_path),
    Option(key="baseline", dest="baseline", parse=_path),
    Option(key="threshold", dest="threshold", parse=_number, default=0.5),
    Option(key="corpus", dest="corpus", parse=_path, default=Path("varguard-corpus")),
    Option(key="timeout", dest="timeout", parse=_number),
    Option(key="jobs", dest="jobs", parse=_integer),
    Option(key="junit_xml", dest="junit_xml", parse=_path),
)
DEFAULTS = {o.dest: o.default for o in OPTIONS}
STAGE_KEYS = tuple(stage.name for stage in STAGES)
KEYS = (*(o.key for o in OPTIONS), *STAGE_KEYS)


def find(explicit: Path | None, *, cwd: Path | None = None) -> Path | None:
    """The pyproject.toml to read: --config's, else the current directory's (if any)."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise UsageError(f"--config {explicit}: no such file; give a pyproject.toml")
        return Path(explicit)
    here = Path(cwd or Path.cwd()) / "pyproject.toml"
    return here if here.is_file() else None


def read(path: Path, *, required: bool = False) -> dict[str, Any]:
    """The [tool.varguard] table of ``path`` ({} when it has none, unless ``required``)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML ({exc}); fix the file or pass --config") from None
    table = data.get("tool", {}).get("varguard")
    if table is None:
        if required:
            raise UsageError(f"--config {path}: it has no [{SECTION}] table; add one")
        return {}
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [{SECTION}] must be a table")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise UsageError(
            f"{path} [{SECTION}]: unknown key {unknown[0]!r}; known keys: {', '.join(KEYS)}"
        )
    return table


def apply(args: argparse.Namespace, *, cwd: Path | None = None) -> Path | None:
    """Fill the `run` options the command line left unset from [tool.varguard], then from the
    built-in defaults; return the file read (None if none). Options the parser leaves at None
    are the unset ones, so a command-line value equal to a default still wins over the file."""
    path = find(getattr(args, "config", None), cwd=cwd)
    table = read(path, required=getattr(args, "config", None) is not None) if path else {}
    base = path.parent if path else Path(".")
    for opt in OPTIONS:
        if getattr(args, opt.dest, None) is not None:
            continue
        value = opt.default
        if opt.key in table:
            try:
                value = opt.parse(table[opt.key], base)
            except _Bad as exc:
                raise UsageError(
                    f"{path} [{SECTION}] {opt.key} = {table[opt.key]!r}: {exc}"
                ) from None
        setattr(args, opt.dest, value)
    for name in STAGE_KEYS:
        if name not in table or getattr(args, name) is not None or getattr(args, f"no_{name}"):
            continue
        value = table[name]
        if value is False:
            setattr(args, f"no_{name}", True)
        elif value is True:
            setattr(args, name, "")  # the stage with its command's default options
        elif isinstance(value, str):
            setattr(args, name, value)
        else:
            raise UsageError(
                f"{path} [{SECTION}] {name} = {value!r}: give false, true or a string of "
                f"`varguard {name}` options"
            )
    return path


__all__ = ["DEFAULTS", "KEYS", "OPTIONS", "Option", "apply", "find", "read"]

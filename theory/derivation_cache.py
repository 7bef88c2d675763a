"""A disk cache for the slow SymPy derivations, so that each process does not redo them.

The SELU moments by symbolic integration take several seconds, and every process that imports the
checks needs them: the CLI, its fork server, each worker, each test worker. A derivation is a pure
function of its module's source, SymPy's version and Python's; its result is kept pickled under a
key made of those, and later processes load it in milliseconds. Edit the module or upgrade SymPy
and the key changes, so it is derived again: a cached result is never older than its derivation.

``VARGUARD_CACHE_DIR`` moves the cache (default ``$XDG_CACHE_HOME/varguard`` or
``~/.cache/varguard``); ``VARGUARD_CACHE_DIR=off`` turns it off. A file that cannot be read or
written is ignored: the cache only ever saves time.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sympy as sp

T = TypeVar("T")

ENV = "VARGUARD_CACHE_DIR"


def cache_dir() -> Path | None:
    """Where derivations are kept, or None when ``VARGUARD_CACHE_DIR=off``."""
    chosen = os.environ.get(ENV)
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen) / "derivations"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "varguard" / "derivations"


def derivation_key(fn: Callable) -> str:
    """What a result depends on: the source of the module that derives it, SymPy, Python."""
    digest = hashlib.sha256(Path(fn.__code__.co_filename).read_bytes())
    digest.update(f"{sp.__version__} {sys.version_info[:2]} {fn.__qualname__}".encode())
    return f"{fn.__module__}.{fn.__qualname__}.{digest.hexdigest()[:20]}"


def cached_derivation(fn: Callable[[], T]) -> Callable[[], T]:
    """Derive ``fn()`` once per machine: in memory for this process, pickled on disk for the next.

    Only for a function of no arguments that reads nothing but its own module and SymPy (the key
    hashes that module's source alone).
    """
    key = derivation_key(fn)

    @functools.lru_cache(maxsize=1)
    @functools.wraps(fn)
    def derived() -> T:
        folder = cache_dir()
        path = folder / f"{key}.pickle" if folder is not None else None
        if path is not None and path.is_file():
            try:
                return pickle.loads(path.read_bytes())
            except Exception:  # a truncated or foreign file: derive again and replace it
                pass
        value = fn()
        if path is not None:
            _write_atomically(path, pickle.dumps(value))
        return value

    return derived


def _write_atomically(path: Path, data: bytes) -> None:
    """Rename into place, so that a process reading concurrently sees a whole file or none."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:  # a read-only home or a full disk costs time, never a result
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)

"""The regression corpus: every shrunk counterexample kept as a file, replayed first next time.

Like Hypothesis' ``@example``: a bug once found is tried again on every later run, before any
search, so a regression shows at once and the same minimal case names it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from pathlib import Path

from verify.atomic import write_text
from verify.result import slug


def _folder(root: Path, check: str, target: str) -> Path:
    return Path(root) / check / slug(target)


def save(root: Path, check: str, target: str, case) -> Path | None:
    if case is None or not dataclasses.is_dataclass(case):
        return None
    cls = type(case)
    record = {
        "check": check,
        "target": target,
        "case_class": f"{cls.__module__}:{cls.__name__}",
        "fields": dataclasses.asdict(case),
        "repr": repr(case),
    }
    digest = hashlib.sha1(record["repr"].encode()).hexdigest()[:12]
    path = _folder(root, check, target) / f"{digest}.json"
    if not path.exists():
        write_text(path, json.dumps(record, indent=1))
    return path


def load(root: Path, check: str, target: str) -> list:
    folder = _folder(root, check, target)
    if not folder.is_dir():
        return []
    cases = []
    for path in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
            module, _, name = rec["case_class"].partition(":")
            cls = getattr(importlib.import_module(module), name)
            cases.append(cls(**{k: _tuples(v) for k, v in rec["fields"].items()}))
        except (ValueError, KeyError, TypeError, ImportError, AttributeError):
            continue  # a corpus file from an older schema: skip it rather than stop the run
    return cases


def _tuples(v):
    # JSON has no tuples; the cases' sequence fields (shapes) are tuples.
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v

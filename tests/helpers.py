"""What several test modules share: running the `varguard` command line in a child process, and
the slow-tier parametrisation."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The environment of a child process that imports this checkout, wherever it runs.
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def varguard(*args: str, cwd=ROOT, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m verify ARGS`` with this checkout importable from any ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "verify", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=timeout,
    )


def slow_except(values, keep) -> list:
    """``values`` as pytest params, each but those ``keep(value)`` selects marked slow: CI runs
    one representative, the slow tier (pytest -m "slow or not slow") every one."""
    return [v if keep(v) else pytest.param(v, marks=pytest.mark.slow) for v in values]

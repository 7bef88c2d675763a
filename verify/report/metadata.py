"""What a report records about the run: versions, device, seed, git revision, profile."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def device() -> dict:
    import torch

    if torch.cuda.is_available():
        return {
            "kind": "cuda",
            "name": torch.cuda.get_device_name(0),
            "count": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "kind": "cpu",
        "name": name,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def device_slug(dev: dict) -> str:
    return "cuda" if dev["kind"] == "cuda" else "cpu"


def collect(*, seed: int, profile: str, argv: list[str] | None = None) -> dict:
    from verify import __version__

    return {
        "varguard": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            p: _version(p)
            for p in ("torch", "numpy", "scipy", "sympy", "mpmath", "hypothesis", "triton")
        },
        "device": device(),
        "seed": seed,
        "profile": profile,
        "git_revision": git_revision(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": command_argv(sys.argv if argv is None else argv),
    }


def command_argv(argv: list[str]) -> list[str]:
    """The command as a user types it: `python -m verify` and the console script are `varguard`."""
    argv = list(argv)
    if argv and Path(argv[0]).name in ("varguard", "__main__.py"):
        argv[0] = "varguard"
    return argv

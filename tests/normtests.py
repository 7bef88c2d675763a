"""What the norm families' check tests share (tests/test_checks_{layernorm,rmsnorm,groupnorm,
prenorm}.py): a small profile, running every check of a family on a target, and a user's module
written outside the project."""

from __future__ import annotations

import dataclasses
import textwrap

from verify.checks import checks_for
from verify.checks.base import run_check
from verify.profiles import get_profile
from verify.result import Status
from verify.targets import builtin

QUICK = get_profile("quick")
#: The quick profile with fewer searched cases: each check's fixed known cases still run first
#: (the configurations the mutants live in), then three drawn ones. The 20-seed sweep at the
#: full quick profile is measured apart (README, "No false alarms").
SMALL = dataclasses.replace(QUICK, name="small", examples=3, compiled_examples=1)


def cpu_targets(family: str, *, triton: bool = False) -> list:
    """The family's built-in targets that run here, compiled ones left out (the sweep runs them;
    each new shape is a recompilation); ``triton``: only the Triton kernels, else none of them."""
    return [
        t
        for t in builtin()
        if t.family == family
        and t.unavailable() is None
        and not t.compile
        and ("triton" in t.requires) == triton
    ]


def failures(target, *, seed: int, profile=SMALL) -> list[str]:
    """Every check of the target's family that did not pass (or skip), with why."""
    results = [run_check(c, target, profile, seed=seed) for c in checks_for(target.family)]
    assert any(r.status == Status.PASSED for r in results)
    return [
        f"{r.check}: {r.status}: {r.message}\n  {r.counterexample}"
        for r in results
        if r.status not in (Status.PASSED, Status.SKIPPED)
    ]


def write_module(tmp_path, monkeypatch, name: str, source: str) -> None:
    """A module ``name`` outside the project, importable as resolve would find it (from the
    current directory)."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

"""pytest plugin: run varguard's checks inside a library's own test session.

    pytest --varguard-target mylib.norm:FastBatchNorm2d [--varguard-profile quick]

adds one test item per (target, check). Without --varguard-target the plugin does nothing.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("varguard")
    group.addoption(
        "--varguard-target",
        action="append",
        default=[],
        metavar="T",
        help="verify this target (module:Name, built-in name or mutant:NAME)",
    )
    group.addoption(
        "--varguard-profile",
        default="quick",
        choices=("quick", "standard", "release"),
        help="search effort",
    )
    group.addoption("--varguard-seed", type=int, default=0, help="Hypothesis seed")


def pytest_collection_modifyitems(session, config, items):
    specs = config.getoption("varguard_target")
    if not specs:
        return
    from verify.runner import plan
    from verify.targets import TargetError, resolve

    try:
        targets = [resolve(s) for s in specs]
    except TargetError as exc:
        raise pytest.UsageError(str(exc)) from None
    parent = _VarguardCollector.from_parent(session, name="varguard")
    items.extend(
        VarguardItem.from_parent(parent, name=f"{t.name}::{c.name}", target=t, check=c)
        for t, c in plan(targets)
    )


class _VarguardCollector(pytest.Collector):
    def collect(self):
        return []


class VarguardItem(pytest.Item):
    def __init__(self, *, target, check, **kw):
        super().__init__(**kw)
        self.target, self.check = target, check

    def runtest(self):
        from verify.checks.base import run_check
        from verify.profiles import get_profile

        cfg = self.config
        r = run_check(
            self.check,
            self.target,
            get_profile(cfg.getoption("varguard_profile")),
            seed=cfg.getoption("varguard_seed"),
        )
        if r.status == "skipped":
            pytest.skip(r.message)
        if r.status != "passed":
            raise VarguardFailure(r)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, VarguardFailure):
            r = excinfo.value.result
            text = f"{r.status}: {r.message}"
            if r.repro:
                text += f"\n\nreproduction script:\n{r.repro}"
            return text
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return "varguard", None, f"{self.target.name}::{self.check.name}"


class VarguardFailure(Exception):
    def __init__(self, result):
        super().__init__(result.message)
        self.result = result

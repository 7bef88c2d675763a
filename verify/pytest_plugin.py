"""pytest plugin: run varguard's checks inside a library's own test session.

    pytest --varguard-target mylib.norm:FastBatchNorm2d [--varguard-profile quick]

adds one test item per (target, check). Without --varguard-target the plugin does nothing.
Under pytest-xdist (``pytest -n auto --varguard-target ...``) every worker collects the same
items, each runs its share, and each pins torch to its share of the cores.
"""

from __future__ import annotations

import os

import pytest

from verify.profiles import PROFILES


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
        choices=sorted(PROFILES),
        help="search effort",
    )
    group.addoption("--varguard-seed", type=int, default=0, help="Hypothesis seed")


def pytest_collection_modifyitems(session, config, items):
    specs = config.getoption("varguard_target")
    if not specs:
        return
    # Imported on use: this plugin loads in every pytest session where varguard is installed,
    # and most of them never name a target (torch is a heavy import).
    from verify.checks import checks_for
    from verify.execution import available_cores
    from verify.resolve import TargetError, resolve

    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")  # set in each xdist worker
    if workers:
        import torch

        # n workers with all the cores each would oversubscribe them n times over.
        torch.set_num_threads(max(1, available_cores() // int(workers)))

    try:
        targets = [(s, resolve(s)) for s in specs]
    except TargetError as exc:
        raise pytest.UsageError(str(exc)) from None
    parent = _VarguardCollector.from_parent(session, name="varguard")
    items.extend(
        VarguardItem.from_parent(
            parent, name=f"{t.name}::{c.name}", spec=spec, target=t, check=c.name
        )
        for spec, t in targets
        for c in checks_for(t.family)
    )


class _VarguardCollector(pytest.Collector):
    def collect(self):
        return []


class VarguardItem(pytest.Item):
    def __init__(self, *, spec, target, check, **kw):
        super().__init__(**kw)
        self.spec, self.target, self.check = spec, target, check

    def runtest(self):
        from verify.execution import Job, execution_for, run_checks
        from verify.result import Status

        cfg = self.config
        execution = execution_for(
            cfg.getoption("varguard_profile"), seed=cfg.getoption("varguard_seed"), isolate=False
        )
        (r,) = run_checks([Job.of(self.target, [self.check], spec=self.spec)], execution)
        if r.status == Status.SKIPPED:
            pytest.skip(r.message)
        if r.status != Status.PASSED:
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
        return "varguard", None, f"{self.target.name}::{self.check}"


class VarguardFailure(Exception):
    def __init__(self, result):
        super().__init__(result.message)
        self.result = result

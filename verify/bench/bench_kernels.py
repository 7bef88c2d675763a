"""The pytest-benchmark suite behind `varguard bench`: one test per planned case.

`varguard bench` writes the plan (JSON, see :mod:`verify.bench.workloads`), points
``VARGUARD_BENCH_PLAN`` at it and runs this module with ``pytest.main``. By hand::

    VARGUARD_BENCH_PLAN=plan.json pytest verify/bench/bench_kernels.py --benchmark-json=out.json

Without a plan it times torch-eager at one small shape, so the module also runs on its own. The
file is named bench_*, not test_*: the project's own test run does not collect it.
"""

from __future__ import annotations

import os

from verify.bench import workloads
from verify.bench.families import bench_of

PLAN_ENV = "VARGUARD_BENCH_PLAN"


def _cases() -> list[dict]:
    path = os.environ.get(PLAN_ENV)
    if path:
        return workloads.load_plan(path)
    target = workloads.find_target("torch-eager")
    ops = bench_of(target.family).op_names
    return workloads.plan([workloads.op_case(target, op, (2, 64, 16, 16)) for op in ops])


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = _cases()
        metafunc.parametrize("case", cases, ids=[c["id"] for c in cases])


def test_kernel(benchmark, case):
    fn = workloads.build(case)
    timed = workloads.synchronized(fn, case["device"])
    # Warm-up outside the timing: torch.compile compiles, Triton JIT-compiles, caches fill.
    timed()
    timed()
    benchmark.group = case["group"]
    benchmark.extra_info.update(case)
    if str(case["device"]).startswith("cuda"):
        benchmark.extra_info["cuda_event_s"] = workloads.cuda_event_seconds(fn)
    benchmark(timed)

"""What `varguard bench` times: the cases of a plan, and the callable each one times.

Each family declares its operations, sizes and byte counts once (verify/bench/families/); the
callables are in verify/bench/callables.py. A bench *case* is a plain dict (it travels through a
JSON plan file into the pytest-benchmark module and back out in pytest-benchmark's JSON):
``kind`` "op" (a target's operation at a shape) or "copy" (``y.copy_(x)`` of a byte count, the
bandwidth yardstick).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from verify.bench.callables import KINDS
from verify.bench.families import bench_of
from verify.resolve import resolve
from verify.targets.base import Target

#: The family of a case without one (plans and results written before the other families).
DEFAULT_FAMILY = "batchnorm"


def default_shapes(
    *, family: str, device: str, quick: bool, batch: int | None = None
) -> list[tuple]:
    """The family's sizes of real networks (``quick``: its few); ``batch`` sets the first
    dimension (batch, or tokens), else the GPU's, smaller on a CPU."""
    return bench_of(family).shapes(device=device, quick=quick, lead=batch)


def min_bytes(op: str, shape: Iterable[int], dtype: str, *, family: str = DEFAULT_FAMILY) -> int:
    """Bytes an ideal kernel moves for ``op`` of ``family``: each input read once, each output
    written once (derived in verify/bench/families/<family>.py)."""
    return bench_of(family).min_bytes(op, shape, dtype)


def shape_id(shape: Iterable[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def op_case(target: Target, op: str, shape: Iterable[int]) -> dict:
    shape = [int(s) for s in shape]
    nbytes = min_bytes(op, shape, target.dtype, family=target.family)
    device = target.device
    return {
        "kind": "op",
        "id": f"{op}:{target.name}:{shape_id(shape)}",
        "group": f"{target.family} {op} {shape_id(shape)}",
        "family": target.family,
        "target": target.name,
        "op": op,
        "shape": shape,
        "dtype": target.dtype,
        "memory_format": target.memory_format,
        "device": device,
        "bytes": nbytes,
        "copy_id": copy_id(nbytes, device),
    }


def copy_id(nbytes: int, device: str) -> str:
    return f"copy:{copy_elements(nbytes) * 8}B:{device}"


def copy_elements(nbytes: int) -> int:
    """float32 elements per tensor of a copy moving ``nbytes`` (half read, half written)."""
    return max(1, nbytes // 8)


def copy_case(nbytes: int, device: str) -> dict:
    return {
        "kind": "copy",
        "id": copy_id(nbytes, device),
        "group": "copy",
        "device": device,
        "bytes": copy_elements(nbytes) * 8,
    }


def plan(op_cases: list[dict]) -> list[dict]:
    """The op cases and one copy per distinct (bytes, device) among them, copies first."""
    copies = {c["copy_id"]: copy_case(c["bytes"], c["device"]) for c in op_cases}
    return [*copies.values(), *op_cases]


def save_plan(cases: list[dict], path: Path) -> None:
    Path(path).write_text(json.dumps({"cases": cases}, indent=1))


def load_plan(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text())["cases"]


# --- the callables ---------------------------------------------------------------------------


def find_target(name: str, *, family: str | None = None) -> Target:
    """A target by name (built-ins, mutant:NAME, module:Name); ``family`` says which drop-in a
    user's class that subclasses none of the declared bases stands for."""
    return resolve(name, family=family)


def build(case: dict) -> Callable[[], object]:
    """The callable one round times (asynchronous on a GPU: see :func:`synchronized`)."""
    if case["kind"] == "copy":
        n = copy_elements(case["bytes"])
        src = torch.randn(n, device=case["device"])
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)
    family = case.get("family", DEFAULT_FAMILY)
    target = find_target(case["target"], family=family)
    return op_callable(target, case["op"], tuple(case["shape"]))


def op_callable(target: Target, op: str, shape: tuple) -> Callable[[], object]:
    """``op`` of ``target``'s family on a new module of the target at ``shape``."""
    bench = bench_of(target.family)
    module = bench.module(target.factory, shape)
    module.to(device=target.device, dtype=getattr(torch, bench.param_dtype(target)))
    module.train()
    return KINDS[bench.op(op).kind](target, module, shape)


def synchronized(fn: Callable[[], object], device: str) -> Callable[[], object]:
    """``fn`` that returns only when the device is done: what a wall-clock timer may time."""
    if not str(device).startswith("cuda"):
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def cuda_event_seconds(fn: Callable[[], object], *, rounds: int = 50) -> dict:
    """Median and minimum of ``rounds`` timings of ``fn`` between two CUDA events, in seconds:
    the GPU's own clock, free of the host's launch and synchronisation overhead."""
    times = []
    for _ in range(rounds):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return {"median": statistics.median(times), "min": min(times), "rounds": rounds}


__all__ = [
    "DEFAULT_FAMILY",
    "build",
    "copy_case",
    "cuda_event_seconds",
    "default_shapes",
    "find_target",
    "load_plan",
    "min_bytes",
    "op_callable",
    "op_case",
    "plan",
    "save_plan",
    "synchronized",
]

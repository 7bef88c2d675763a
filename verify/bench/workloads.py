"""What `varguard bench` times: operations, sizes, the bytes each must move, and the callables.

A bench *case* is a plain dict (it travels through a JSON plan file into the pytest-benchmark
module and back out in pytest-benchmark's JSON): ``kind`` "op" (a target's operation at a shape)
or "copy" (``y.copy_(x)`` of a byte count, the bandwidth yardstick).
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from verify.adapters import batchnorm as adapter
from verify.bench.layers import (
    CPU_BATCH,
    GPU_BATCH,
    OPS,
    PARAM_BYTES,
    QUICK_CPU_BATCH,
    RESNET50_LAYERS,
)
from verify.resolve import resolve
from verify.targets import triton as triton_targets
from verify.targets.base import Target


def default_shapes(*, device: str, quick: bool, batch: int | None = None) -> list[tuple]:
    """ResNet-50 layer shapes (N, C, H, W); ``quick``: the first and the last only."""
    layers = [RESNET50_LAYERS[0], RESNET50_LAYERS[-1]] if quick else list(RESNET50_LAYERS)
    if batch is None:
        batch = GPU_BATCH if device == "cuda" else (QUICK_CPU_BATCH if quick else CPU_BATCH)
    return [(batch, *chw) for _, chw in layers]


def element_size(dtype: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype)).element_size()


def min_bytes(op: str, shape: Iterable[int], dtype: str) -> int:
    """Bytes an ideal kernel moves: each input read once, each output written once.

    Per channel vectors (float32): gamma, beta, running mean and variance, and the saved batch
    mean and 1/std a training forward hands its backward.
    """
    shape = tuple(shape)
    act = math.prod(shape) * element_size(dtype)
    vec = shape[1] * PARAM_BYTES
    if op == "fwd-train":  # x, gamma, beta, running (r+w); y, saved mean/rstd
        return 2 * act + 8 * vec
    if op == "fwd-eval":  # x, gamma, beta, running; y
        return 2 * act + 4 * vec
    if op == "bwd-train":  # dy, x, gamma, saved mean/rstd; dx, dgamma, dbeta
        return 3 * act + 6 * vec
    if op == "tail-train":  # x, shortcut, gamma, beta, running (r+w); y, saved mean/rstd
        return 3 * act + 8 * vec
    raise ValueError(f"op={op!r} is unknown; use one of {sorted(OPS)}")


def shape_id(shape: Iterable[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def op_case(target: Target, op: str, shape: Iterable[int]) -> dict:
    shape = [int(s) for s in shape]
    nbytes = min_bytes(op, shape, target.dtype)
    device = target.device
    return {
        "kind": "op",
        "id": f"{op}:{target.name}:{shape_id(shape)}",
        "group": f"{op} {shape_id(shape)}",
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


def find_target(name: str) -> Target:
    """A batch-norm target by name: the Triton ones, then the registry (built-ins, module:Name)."""
    for t in triton_targets.builtin():
        if t.name == name:
            return t
    return resolve(name, family="batchnorm")


class _Tail(torch.nn.Module):
    """relu(bn(x) + shortcut): fused where the batch norm offers it (the Triton kernels)."""

    def __init__(self, bn: torch.nn.Module):
        super().__init__()
        self.bn = bn

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        fused = getattr(self.bn, "forward_add_relu", None)
        if fused is not None:
            return fused(x, shortcut)
        return torch.relu(self.bn(x) + shortcut)


def _contexts(target: Target) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    cudnn = target.options.get("cudnn")
    if cudnn is not None:
        stack.enter_context(torch.backends.cudnn.flags(enabled=cudnn))
    stack.enter_context(target.autocast_context())
    return stack


def _input(target: Target, shape, gen: torch.Generator) -> torch.Tensor:
    t = torch.randn(shape, generator=gen).to(device=target.device, dtype=target.torch_dtype)
    if target.memory_format == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def build(case: dict) -> Callable[[], object]:
    """The callable one round times (asynchronous on a GPU: see :func:`synchronized`)."""
    if case["kind"] == "copy":
        n = copy_elements(case["bytes"])
        src = torch.randn(n, device=case["device"])
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)
    return _op_callable(find_target(case["target"]), case["op"], tuple(case["shape"]))


def _op_callable(target: Target, op: str, shape: tuple) -> Callable[[], object]:
    gen = torch.Generator().manual_seed(0)
    module = target.factory(shape[1])
    module.to(target.device)
    if target.dtype == "float64":
        module.double()
    x = _input(target, shape, gen)
    if op == "fwd-eval":
        module.eval()

        def run():
            with torch.no_grad():
                return adapter.call(target, module, x)

        return run
    module.train()
    x.requires_grad_(True)
    if op == "fwd-train":
        return lambda: adapter.call(target, module, x)
    if op == "bwd-train":
        y = adapter.call(target, module, x)
        dy = _input(target, shape, gen).to(y.dtype)
        inputs = [x, *(p for p in module.parameters() if p.requires_grad)]
        return lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True)
    if op == "tail-train":
        shortcut = _input(target, shape, gen)
        tail = _Tail(module)
        if target.compile:
            tail = torch.compile(tail, dynamic=False)

        def run_tail():
            with _contexts(target):
                return tail(x, shortcut)

        return run_tail
    raise ValueError(f"op={op!r} is unknown; use one of {sorted(OPS)}")


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
    "build",
    "copy_case",
    "cuda_event_seconds",
    "default_shapes",
    "find_target",
    "load_plan",
    "min_bytes",
    "op_case",
    "plan",
    "save_plan",
    "synchronized",
]

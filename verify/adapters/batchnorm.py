"""Run any batch-norm target on a case: the same way for all of them.

Build the module with the case's hyper-parameters, put the input in the target's dtype and memory
layout, run forward (and backward) under the target's autocast / torch.compile, and hand back
float64 arrays.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from verify.adapters.base import as_numpy, compiled, expect_like, to_input
from verify.strategies.batchnorm import BNCase, make_affine, make_grad, make_input
from verify.targets.base import Target


@dataclass
class BNRun:
    """What one training step (or eval forward) of a target produced, as float64 arrays."""

    y: np.ndarray
    dx: np.ndarray | None = None
    dgamma: np.ndarray | None = None
    dbeta: np.ndarray | None = None
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None
    num_batches_tracked: int | None = None
    input_after: np.ndarray | None = None


def build(target: Target, case: BNCase) -> torch.nn.Module:
    """The target's module for ``case``: hyper-parameters, gamma and beta set from the case."""
    if isinstance(target.factory, type) and issubclass(target.factory, torch.nn.SyncBatchNorm):
        _single_process_group(target.device)
    module = target.factory(
        case.channels,
        eps=case.eps,
        momentum=case.momentum,
        affine=case.affine,
        track_running_stats=case.track_running_stats,
    )
    gamma, beta = make_affine(case)
    with torch.no_grad():
        if case.affine:
            module.weight.copy_(torch.from_numpy(gamma))
            module.bias.copy_(torch.from_numpy(beta))
    module.to(target.device)
    # Half-precision targets keep float32 parameters (mixed precision, as under autocast);
    # a float64 target runs entirely in float64.
    if target.dtype == "float64":
        module.double()
    return module


def _single_process_group(device: str) -> None:
    """SyncBatchNorm only synchronises inside a process group (without one it silently falls
    back to BatchNorm): make a world of size 1 so its distributed path is what runs."""
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def call(target: Target, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    fn = compiled(module) if target.compile else module
    cudnn = target.options.get("cudnn")
    flags = torch.backends.cudnn.flags(enabled=cudnn) if cudnn is not None else nullcontext()
    with flags, target.autocast_context():
        y = fn(x)
    expect_like(y, x, who=f"target {target.name!r}")
    return y


def train_step(
    target: Target,
    case: BNCase,
    module: torch.nn.Module | None = None,
    *,
    step: int = 0,
    backward: bool = True,
) -> BNRun:
    """One training-mode forward (and backward with the case's upstream gradient)."""
    module = module if module is not None else build(target, case)
    module.train()
    values = make_input(case, step=step)
    x = to_input(target, values, noncontiguous=case.noncontiguous, requires_grad=backward)
    y = call(target, module, x)
    run = BNRun(y=as_numpy(y))
    if backward:
        dy = torch.from_numpy(make_grad(case)).to(device=y.device, dtype=y.dtype)
        y.backward(dy)
        run.dx = as_numpy(x.grad)
        if case.affine:
            run.dgamma, run.dbeta = as_numpy(module.weight.grad), as_numpy(module.bias.grad)
    if case.track_running_stats:
        run.running_mean = as_numpy(module.running_mean)
        run.running_var = as_numpy(module.running_var)
        nbt = getattr(module, "num_batches_tracked", None)
        run.num_batches_tracked = None if nbt is None else int(nbt)
    run.input_after = as_numpy(x)
    return run


def eval_forward(
    target: Target, case: BNCase, running_mean: np.ndarray, running_var: np.ndarray
) -> np.ndarray:
    module = build(target, case)
    with torch.no_grad():
        module.running_mean.copy_(torch.from_numpy(running_mean))
        module.running_var.copy_(torch.from_numpy(running_var))
        module.eval()
        x = to_input(target, make_input(case), noncontiguous=case.noncontiguous)
        return as_numpy(call(target, module, x))

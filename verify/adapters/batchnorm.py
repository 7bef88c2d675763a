"""Run any batch-norm target on a case: the same way for all of them.

Build the module with the case's hyper-parameters, put the input and the incoming gradient in
the target's dtype and in the case's layouts, run a step in training or eval mode (with or
without backward) under the target's autocast / torch.compile, and hand back float64 arrays and
the layouts of what came back.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from verify.adapters.base import as_numpy, as_run, expect_like, layout_of, to_input
from verify.strategies.batchnorm import (
    BNCase,
    expanded_axis,
    make_affine,
    make_grad,
    make_input,
)
from verify.targets.base import Target


@dataclass
class BNRun:
    """What one step of a target produced, as float64 arrays, and how it was laid out."""

    y: np.ndarray
    dx: np.ndarray | None = None
    dgamma: np.ndarray | None = None
    dbeta: np.ndarray | None = None
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None
    num_batches_tracked: int | None = None
    input_after: np.ndarray | None = None
    y_layout: str = ""
    dx_layout: str = ""


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


def set_running(module: torch.nn.Module, running_mean, running_var) -> None:
    """Load running statistics (float64 arrays) into a module that tracks them."""
    with torch.no_grad():
        module.running_mean.copy_(torch.from_numpy(running_mean))
        module.running_var.copy_(torch.from_numpy(running_var))


def _single_process_group(device: str) -> None:
    """SyncBatchNorm only synchronises inside a process group (without one it silently falls
    back to BatchNorm): make a world of size 1 so its distributed path is what runs."""
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def call(target: Target, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    fn = as_run(target, module)
    cudnn = target.options.get("cudnn")
    flags = torch.backends.cudnn.flags(enabled=cudnn) if cudnn is not None else nullcontext()
    with flags, target.autocast_context():
        y = fn(x)
    expect_like(y, x, who=f"target {target.name!r}")
    return y


def input_tensor(target: Target, case: BNCase, values: np.ndarray, *, requires_grad=False):
    """``values`` as the target's input, in the case's input layout."""
    return to_input(
        target,
        values,
        layout=case.x_layout,
        requires_grad=requires_grad,
        axis=expanded_axis(case.shape),
    )


def step(
    target: Target,
    case: BNCase,
    module: torch.nn.Module,
    *,
    mode: str = "train",
    backward: bool = False,
    index: int = 0,
) -> BNRun:
    """One forward of ``module`` in ``mode`` ("train" or "eval") on the case's input number
    ``index``, and with ``backward`` the backward of the case's incoming gradient. The
    gradients are taken with torch.autograd.grad, so dx is the tensor the target made (its
    layout included), not one autograd laid out again for a leaf's .grad."""
    module.train(mode == "train")
    values = make_input(case, step=index)
    x = input_tensor(target, case, values, requires_grad=backward)
    # Inference runs without autograd; a training forward runs with it, as in training.
    grad_ctx = torch.no_grad() if mode == "eval" and not backward else nullcontext()
    with grad_ctx:
        y = call(target, module, x)
    run = BNRun(y=as_numpy(y), y_layout=layout_of(y))
    if backward:
        dy = to_input(
            target,
            make_grad(case, step=index),
            layout=case.dy_layout,
            dtype=y.dtype,
            axis=expanded_axis(case.shape),
        )
        params = [module.weight, module.bias] if case.affine else []
        grads = torch.autograd.grad(y, [x, *params], dy, allow_unused=True)
        run.dx, run.dx_layout = as_numpy(grads[0]), layout_of(grads[0])
        if case.affine:
            run.dgamma, run.dbeta = as_numpy(grads[1]), as_numpy(grads[2])
    if getattr(module, "running_mean", None) is not None:
        run.running_mean = as_numpy(module.running_mean)
        run.running_var = as_numpy(module.running_var)
    nbt = getattr(module, "num_batches_tracked", None)
    run.num_batches_tracked = None if nbt is None else int(nbt)
    run.input_after = as_numpy(x)
    return run


def train_step(
    target: Target,
    case: BNCase,
    module: torch.nn.Module | None = None,
    *,
    step_index: int = 0,
    backward: bool = True,
) -> BNRun:
    """One training-mode forward (and backward with the case's upstream gradient)."""
    module = module if module is not None else build(target, case)
    return step(target, case, module, mode="train", backward=backward, index=step_index)


def eval_step(
    target: Target,
    case: BNCase,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    *,
    backward: bool = False,
) -> BNRun:
    """An eval-mode forward (and backward) with the given running statistics (None: a module
    that tracks none, which normalises with the batch's)."""
    module = build(target, case)
    if running_mean is not None and case.track_running_stats:
        set_running(module, running_mean, running_var)
    return step(target, case, module, mode="eval", backward=backward)

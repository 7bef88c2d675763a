"""What the normalisation adapters share (layer norm, RMSNorm, group norm, the pre-norm tail):
parameters set from a case, one forward (and backward) of a module under the target's autocast /
torch.compile, and what came back as float64 arrays with its dtypes and layouts.

The family adapters (verify/adapters/layernorm.py, ...) build the module with their constructor
and hand the case's arrays to :func:`run_module`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from verify.adapters.base import ContractViolation, as_numpy, as_run, layout_of, to_input
from verify.targets.base import Target


@dataclass
class NormRun:
    """What one call of a target produced, as float64 arrays, with dtypes and layouts."""

    y: np.ndarray
    y_dtype: str = ""
    y_layout: str = ""
    dx: np.ndarray | None = None
    dx_layout: str = ""
    dx_dtype: str = ""
    dweight: np.ndarray | None = None
    dbias: np.ndarray | None = None
    dweight_dtype: str = ""
    dbias_dtype: str = ""
    input_after: np.ndarray | None = None  # the input after forward and backward
    grad_after: np.ndarray | None = None  # the incoming gradient after backward
    extra: dict = field(default_factory=dict)  # a family's own outputs (the written stream)


def dtype_name(t: torch.Tensor | None) -> str:
    return "" if t is None else str(t.dtype).removeprefix("torch.")


def set_params(module: torch.nn.Module, weight, bias, *, param_dtype: str, device: str) -> None:
    """Move the module to ``device`` with its parameters in ``param_dtype``, then load weight and
    bias (float64 arrays already rounded to that dtype, so the copy is exact; None: leave it)."""
    module.to(device=device, dtype=getattr(torch, param_dtype))
    with torch.no_grad():
        for name, values in (("weight", weight), ("bias", bias)):
            p = getattr(module, name, None)
            if values is not None and p is not None:
                p.copy_(torch.from_numpy(np.asarray(values)))


def parameters(module: torch.nn.Module) -> list[torch.Tensor]:
    """weight and bias where the module has them (None where it has not)."""
    return [getattr(module, name, None) for name in ("weight", "bias")]


def call(target: Target, module: torch.nn.Module, *inputs: torch.Tensor):
    fn = as_run(target, module)
    with target.autocast_context():
        return fn(*inputs)


def expect_output(y, x: torch.Tensor, *, target: Target, what: str = "output") -> None:
    """A drop-in norm returns a tensor of its input's shape, in its input's dtype; under
    autocast, float32 where the op's autocast policy computes in float32 (CUDA's for the norms)."""
    who = f"target {target.name!r}"
    if not isinstance(y, torch.Tensor):
        raise ContractViolation(f"{who} returned {type(y).__name__} as its {what}, expected a "
                                f"torch.Tensor")  # fmt: skip
    if tuple(y.shape) != tuple(x.shape):
        raise ContractViolation(
            f"{who} returned {what} of shape {tuple(y.shape)} for input of shape "
            f"{tuple(x.shape)}; a drop-in must keep the shape"
        )
    allowed = {x.dtype} | ({torch.float32} if target.autocast else set())
    if y.dtype not in allowed:
        raise ContractViolation(
            f"{who} returned {what} of dtype {y.dtype} for {x.dtype} input; a drop-in must "
            f"return its input's dtype"
        )


def input_tensor(target: Target, values, *, layout: str, axis: int | None, requires_grad=False):
    return to_input(target, values, layout=layout, requires_grad=requires_grad, axis=axis)


def run_module(
    target: Target,
    module: torch.nn.Module,
    *,
    x: np.ndarray,
    x_layout: str,
    axis: int | None,
    dy: np.ndarray | None = None,
    dy_layout: str = "contiguous",
) -> NormRun:
    """One forward of ``module`` on ``x`` (float64 values of the target's dtype) laid out as
    ``x_layout``, and with ``dy`` the backward of that incoming gradient. Gradients come from
    torch.autograd.grad, so dx is the tensor the target made (its layout included)."""
    backward = dy is not None
    xt = input_tensor(target, x, layout=x_layout, axis=axis, requires_grad=backward)
    ctx = nullcontext() if backward else torch.no_grad()
    with ctx:
        y = call(target, module, xt)
    expect_output(y, xt, target=target)
    run = NormRun(y=as_numpy(y), y_dtype=dtype_name(y), y_layout=layout_of(y))
    if backward:
        dyt = to_input(target, dy, layout=dy_layout, dtype=y.dtype, axis=axis)
        named = [
            (name, p)
            for name, p in zip(("weight", "bias"), parameters(module), strict=True)
            if p is not None and p.requires_grad
        ]
        grads = torch.autograd.grad(y, [xt, *(p for _, p in named)], dyt, allow_unused=True)
        by_name = {name: g for (name, _), g in zip(named, grads[1:], strict=True)}
        dx = grads[0]
        run.dx, run.dx_dtype = as_numpy(dx), dtype_name(dx)
        run.dx_layout = layout_of(dx) if dx is not None else ""
        run.dweight, run.dweight_dtype = (
            as_numpy(by_name.get("weight")),
            dtype_name(by_name.get("weight")),
        )
        run.dbias, run.dbias_dtype = as_numpy(by_name.get("bias")), dtype_name(by_name.get("bias"))
        run.grad_after = as_numpy(dyt)
    run.input_after = as_numpy(xt)
    return run


__all__ = [
    "NormRun",
    "call",
    "dtype_name",
    "expect_output",
    "input_tensor",
    "parameters",
    "run_module",
    "set_params",
]

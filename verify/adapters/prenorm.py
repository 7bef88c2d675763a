"""Run any pre-norm tail target on a case: a module built like ``torch.nn.RMSNorm`` (or
``torch.nn.LayerNorm``: verify.strategies.prenorm.norm_of) whose ``forward(x, residual)``
returns ``(y, residual_out)`` with ``residual_out = x + residual`` in the activations' dtype and
``y = norm(residual_out)``: vLLM's ``fused_add_rms_norm``, ``residual += x; y = norm(residual)``.

An in-place target (``options["inplace"]``) writes residual_out into ``residual``; autograd
refuses that on a leaf, so its stream is handed over as a copy of the leaf (a non-leaf, as it is
in a network: the previous block's output).
"""

from __future__ import annotations

import numpy as np
import torch

from verify.adapters.base import ContractViolation, as_numpy, layout_of, to_input
from verify.adapters.rows import NormRun, call, dtype_name, expect_output, parameters, set_params
from verify.strategies.prenorm import (
    AddNormCase,
    make_dres,
    make_grad,
    make_input,
    make_residual,
    norm_of,
)
from verify.strategies.rows import expanded_axis, make_params
from verify.targets.base import Target


def build(target: Target, case: AddNormCase) -> torch.nn.Module:
    kwargs = {"eps": case.eps, "elementwise_affine": case.affine}
    if norm_of(target) == "layer":
        kwargs["bias"] = case.bias
    module = target.factory(case.normalized_shape, **kwargs)
    weight, bias = make_params(case)
    set_params(module, weight, bias, param_dtype=case.param_dtype, device=target.device)
    return module


def step(
    target: Target,
    case: AddNormCase,
    module: torch.nn.Module | None = None,
    *,
    backward: bool = True,
    x_values: np.ndarray | None = None,
    residual_values: np.ndarray | None = None,
) -> NormRun:
    """One call of the tail on the case's branch output and stream (or on the given values),
    and with ``backward`` the backward of dy (and of the case's gradient into the stream)."""
    module = module if module is not None else build(target, case)
    axis = expanded_axis(case.shape, case.normalized_dims)
    x_values = make_input(case) if x_values is None else x_values
    r_values = make_residual(case) if residual_values is None else residual_values
    x = to_input(target, x_values, layout=case.x_layout, axis=axis, requires_grad=backward)
    leaf = to_input(target, r_values, layout=case.residual_layout, axis=axis,
                    requires_grad=backward)  # fmt: skip
    # An in-place tail writes into its stream: give it a copy of the leaf (a non-leaf, as the
    # previous block's output is), and differentiate with respect to the leaf.
    residual = leaf.clone() if target.options.get("inplace") else leaf
    with torch.enable_grad() if backward else torch.no_grad():
        out = call(target, module, x, residual)
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise ContractViolation(
            f"target {target.name!r} returned {type(out).__name__}; a pre-norm tail returns the "
            f"pair (y, residual_out)"
        )
    y, h = out
    expect_output(y, x, target=target)
    expect_output(h, x, target=target, what="residual_out")
    run = NormRun(y=as_numpy(y), y_dtype=dtype_name(y), y_layout=layout_of(y))
    run.extra.update(
        residual_out=as_numpy(h),
        residual_out_dtype=dtype_name(h),
        residual_after=as_numpy(residual),
    )
    if backward:
        dyt = to_input(target, make_grad(case), layout=case.dy_layout, dtype=y.dtype, axis=axis)
        dres = make_dres(case)
        named = [
            (name, p)
            for name, p in zip(("weight", "bias"), parameters(module), strict=True)
            if p is not None and p.requires_grad
        ]
        outputs, grad_outputs = [y], [dyt]
        if dres is not None:
            outputs.append(h)
            grad_outputs.append(to_input(target, dres, layout="contiguous", dtype=h.dtype))
        grads = torch.autograd.grad(
            outputs, [x, leaf, *(p for _, p in named)], grad_outputs, allow_unused=True
        )
        by_name = {name: g for (name, _), g in zip(named, grads[2:], strict=True)}
        run.dx, run.dx_dtype = as_numpy(grads[0]), dtype_name(grads[0])
        run.dx_layout = layout_of(grads[0]) if grads[0] is not None else ""
        run.extra["dresidual"] = as_numpy(grads[1])
        # Its storage dtype: an exact gradient past float16's range is +-inf there (compare).
        run.extra["dresidual_dtype"] = dtype_name(grads[1])
        run.dweight, run.dweight_dtype = (
            as_numpy(by_name.get("weight")),
            dtype_name(by_name.get("weight")),
        )
        run.dbias, run.dbias_dtype = as_numpy(by_name.get("bias")), dtype_name(by_name.get("bias"))
        run.grad_after = as_numpy(dyt)
    run.input_after = as_numpy(x)
    run.extra["stream_after"] = as_numpy(leaf)
    return run


__all__ = ["build", "step"]

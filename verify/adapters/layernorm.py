"""Run any LayerNorm target on a case: a drop-in for ``torch.nn.LayerNorm`` (same constructor,
same forward), built with the case's normalized_shape, eps, elementwise_affine and bias, its
parameters in the case's parameter dtype, run through verify.adapters.rows."""

from __future__ import annotations

import numpy as np
import torch

from verify.adapters.rows import NormRun, run_module, set_params
from verify.strategies.rows import RowCase, expanded_axis, make_grad, make_input, make_params
from verify.targets.base import Target


def build(target: Target, case: RowCase) -> torch.nn.Module:
    module = target.factory(
        case.normalized_shape, eps=case.eps, elementwise_affine=case.affine, bias=case.bias
    )
    weight, bias = make_params(case)
    set_params(module, weight, bias, param_dtype=case.param_dtype, device=target.device)
    return module


def step(
    target: Target,
    case: RowCase,
    module: torch.nn.Module | None = None,
    *,
    backward: bool = True,
    values: np.ndarray | None = None,
) -> NormRun:
    """One forward (and with ``backward`` the backward of the case's incoming gradient) of a new
    module, or of ``module``, on the case's input (or on ``values``, laid out as the case says)."""
    module = module if module is not None else build(target, case)
    return run_module(
        target,
        module,
        x=make_input(case) if values is None else values,
        x_layout=case.x_layout,
        axis=expanded_axis(case.shape, case.normalized_dims),
        dy=make_grad(case) if backward else None,
        dy_layout=case.dy_layout,
    )


__all__ = ["build", "step"]

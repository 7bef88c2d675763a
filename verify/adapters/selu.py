"""Run any SELU-family target: an activation on values, AlphaDropout on values, a deep stack.

``options["kind"]`` of the target says which protocol it follows (verify.targets.selu.KINDS).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from verify.targets.base import Target
from verify.targets.selu import KINDS


def kind(target: Target) -> str | None:
    k = target.options.get("kind")
    return k if k in KINDS else None


def describe_missing(target: Target) -> str:
    return (
        f"selu target {target.name!r} has options={dict(target.options)!r}: give "
        f"options={{'kind': one of {KINDS}}}"
    )


def _tensor(target: Target, x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(
        device=target.device, dtype=target.torch_dtype
    )


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def activate(target: Target, x: np.ndarray) -> np.ndarray:
    """The activation target applied to ``x`` (float64 values representable in its dtype)."""
    module = target.factory().to(target.device)
    with torch.no_grad():
        y = module(_tensor(target, x))
    if tuple(y.shape) != x.shape:
        raise ValueError(f"{target.name}: output shape {tuple(y.shape)} for input {x.shape}")
    return _np(y)


def alpha_dropout(
    target: Target, x: np.ndarray, *, p: float, seed: int, training: bool = True
) -> np.ndarray:
    """The dropout target with drop probability ``p`` on ``x``; torch seeded with ``seed``."""
    module = target.factory(p=p).to(target.device)
    module.train(training)
    torch.manual_seed(seed)
    with torch.no_grad():
        y = module(_tensor(target, x))
    if tuple(y.shape) != x.shape:
        raise ValueError(f"{target.name}: output shape {tuple(y.shape)} for input {x.shape}")
    return _np(y)


def deep_stack(
    target: Target, *, width: int, depth: int, batch: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer (mean, variance) over all units and examples of depth layers x <- SELU(x W^T),
    W ~ N(0, 1/width) (LeCun normal: fan_in Var[w] = 1), starting at x ~ N(0, 1).

    Weights and inputs come from one torch.Generator seeded with ``seed``, drawn in float64 and
    rounded to the target's dtype; moments are computed in float64.
    """
    module = target.factory().to(target.device)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, width, generator=g, dtype=torch.float64)
    x = x.to(device=target.device, dtype=target.torch_dtype)
    means, variances = np.empty(depth), np.empty(depth)
    with torch.no_grad():
        for layer in range(depth):
            w = torch.randn(width, width, generator=g, dtype=torch.float64) / math.sqrt(width)
            x = module(x @ w.to(device=target.device, dtype=target.torch_dtype).T)
            xd = x.to(torch.float64)
            means[layer] = float(xd.mean())
            variances[layer] = float(xd.var())
    return means, variances

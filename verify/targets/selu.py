"""SELU-family targets and their adapter: activations (torch.nn.SELU, functional selu) and
AlphaDropout.

A target's factory is a module class. ``options["kind"]`` says which protocol it follows:
"activation" (constructed with no arguments, like torch.nn.SELU) or "alpha_dropout"
(constructed as ``factory(p=p)``, like torch.nn.AlphaDropout, and random only in training).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from verify.targets.base import Target

KINDS = ("activation", "alpha_dropout")


# The constants as a careful implementation spells them (Klambauer et al. 2017, 30 digits);
# the checks take theirs from theory.selu, never from here.
ALPHA_01 = 1.6732632423543772848170429916717
LAMBDA_01 = 1.0507009873554804934193349852946


class ExplicitSELU(torch.nn.Module):
    """Drop-in for torch.nn.SELU written op by op: lambda x for x > 0, lambda alpha expm1(x)
    otherwise. Correct (a target); the SELU mutants each override one piece."""

    alpha, scale = ALPHA_01, LAMBDA_01

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def _expm1(self, x: torch.Tensor) -> torch.Tensor:
        return torch.expm1(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        negative = self.alpha * self._expm1(torch.clamp(x, max=0.0))
        return self.scale * torch.where(x > 0, x, negative)


class ExplicitAlphaDropout(torch.nn.Module):
    """Drop-in for torch.nn.AlphaDropout: a (x d + alpha' (1 - d)) + b, d ~ Bernoulli(1 - p),
    a = (q + alpha'^2 q (1-q))^(-1/2), b = -a (1-q) alpha', q = 1 - p; identity in eval."""

    alpha_prime = -LAMBDA_01 * ALPHA_01

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def _affine(self) -> tuple[float, float]:
        q, ap = 1.0 - self.p, self.alpha_prime
        a = 1.0 / math.sqrt(q + ap * ap * q * (1.0 - q))
        return a, -a * (1.0 - q) * ap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p)
        a, b = self._affine()
        return a * (x * keep + self.alpha_prime * (1.0 - keep)) + b


class FunctionalSELU(torch.nn.Module):
    """torch.nn.functional.selu as a module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.selu(x)


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


def builtin() -> list[Target]:
    act = functools.partial(Target, family="selu", options={"kind": "activation"})
    drop = functools.partial(Target, family="selu", options={"kind": "alpha_dropout"})
    return [
        act(name="torch-selu", factory=torch.nn.SELU, description="torch.nn.SELU, float32"),
        act(
            name="torch-selu-float64",
            factory=torch.nn.SELU,
            dtype="float64",
            description="torch.nn.SELU, float64",
        ),
        act(
            name="torch-functional-selu",
            factory=FunctionalSELU,
            description="torch.nn.functional.selu, float32",
        ),
        act(
            name="torch-functional-selu-float64",
            factory=FunctionalSELU,
            dtype="float64",
            description="torch.nn.functional.selu, float64",
        ),
        act(
            name="varguard-explicit-selu",
            factory=ExplicitSELU,
            description="SELU written op by op with expm1 (the mutants' correct base)",
        ),
        drop(
            name="torch-alpha-dropout",
            factory=torch.nn.AlphaDropout,
            description="torch.nn.AlphaDropout, float32",
        ),
        drop(
            name="torch-alpha-dropout-float64",
            factory=torch.nn.AlphaDropout,
            dtype="float64",
            description="torch.nn.AlphaDropout, float64",
        ),
        drop(
            name="varguard-explicit-alpha-dropout",
            factory=ExplicitAlphaDropout,
            description="AlphaDropout written op by op (the mutants' correct base)",
        ),
    ]

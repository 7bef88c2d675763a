"""SELU-family targets: activations (torch.nn.SELU, functional selu) and AlphaDropout.

A target's factory is a module class. ``options["kind"]`` says which protocol it follows:
"activation" (constructed with no arguments, like torch.nn.SELU) or "alpha_dropout"
(constructed as ``factory(p=p)``, like torch.nn.AlphaDropout, and random only in training).
"""

from __future__ import annotations

import functools
import math

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

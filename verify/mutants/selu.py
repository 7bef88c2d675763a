"""SELU and AlphaDropout mutants: the explicit, correct modules of verify/targets/selu.py with one
real bug each (the explicit modules themselves are targets and pass every check)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from verify.mutants.base import Mutants
from verify.targets.selu import ALPHA_01, LAMBDA_01, ExplicitAlphaDropout, ExplicitSELU

MUTANTS = Mutants("selu")


@MUTANTS.register(
    name="selu_rounded_constants",
    bug="SELU constants rounded to two decimals (alpha 1.67, lambda 1.05)",
    caught_by=("selu.constants", "selu.forward"),
    options={"kind": "activation"},
)
class RoundedConstantsSELU(ExplicitSELU):
    alpha, scale = 1.67, 1.05  # BUG: the constants rounded to two decimals


@MUTANTS.register(
    name="selu_exp_minus_one",
    bug="SELU's negative branch as exp(x) - 1 instead of expm1(x)",
    caught_by=("selu.forward",),
    options={"kind": "activation"},
)
class ExpMinusOneSELU(ExplicitSELU):
    def _expm1(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x) - 1.0  # BUG: cancels for small |x|; expm1 does not


@MUTANTS.register(
    name="selu_elu_alpha_one",
    bug="lambda_01 * ELU(x) with ELU's default alpha = 1",
    caught_by=("selu.constants", "selu.forward", "selu.mapping", "selu.fixed_point"),
    options={"kind": "activation"},
)
class EluAlphaOneSELU(torch.nn.Module):
    """lambda_01 * ELU(x) with ELU's default alpha = 1: the scale kept, alpha_01 forgotten."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return LAMBDA_01 * F.elu(x)  # BUG: F.elu(x, alpha=ALPHA_01)


@MUTANTS.register(
    name="selu_alpha_dropout_no_shift",
    bug="AlphaDropout without the shift b",
    caught_by=("selu.alpha_dropout_affine", "selu.alpha_dropout_moments"),
    options={"kind": "alpha_dropout"},
)
class AlphaDropoutNoShift(ExplicitAlphaDropout):
    def _affine(self) -> tuple[float, float]:
        a, _ = super()._affine()
        return a, 0.0  # BUG: the shift b that restores mean 0 is missing


@MUTANTS.register(
    name="selu_alpha_dropout_alpha_not_prime",
    bug="AlphaDropout sets dropped units to -alpha_01 instead of alpha' = -lambda_01 alpha_01",
    caught_by=("selu.alpha_dropout_affine",),
    options={"kind": "alpha_dropout"},
)
class AlphaDropoutAlphaNotPrime(ExplicitAlphaDropout):
    alpha_prime = -ALPHA_01  # BUG: SELU's alpha, not its saturation value -lambda alpha

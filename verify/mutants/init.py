"""Initialisation mutants: drop-in replacements for torch.nn.init samplers with one real bug each.

Each is written out the way a framework or a paper's code would write it (its own fan
computation, torch's gain), so it differs from the correct sampler in exactly the planted line.
"""

from __future__ import annotations

import math

import torch

from verify.mutants.base import Mutants

MUTANTS = Mutants("init", prefix="init_")


def _fans(tensor: torch.Tensor, *, receptive_field: bool = True) -> tuple[int, int]:
    if tensor.dim() < 2:
        raise ValueError(
            "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions"
        )
    field = math.prod(tensor.shape[2:]) if receptive_field else 1
    return tensor.shape[1] * field, tensor.shape[0] * field


@MUTANTS.register(
    name="xavier_sqrt3",
    bug="Xavier uniform bound gain*sqrt(3/(fan_in+fan_out)) instead of sqrt(6/...)",
    caught_by=("init.variance", "init.bounds", "init.ks"),
    options={"scheme": "xavier", "law": "uniform"},
)
def xavier_uniform_sqrt3_(tensor: torch.Tensor, gain: float = 1.0, generator=None):
    """Glorot's bound with 3 in place of 6: the variance of U(-a, a) is a^2/3, and the bound
    was solved for variance 1/(fan_in + fan_out) instead of 2/(fan_in + fan_out)."""
    fan_in, fan_out = _fans(tensor)
    a = gain * math.sqrt(3.0 / (fan_in + fan_out))  # BUG: sqrt(6/...)
    with torch.no_grad():
        return tensor.uniform_(-a, a, generator=generator)


@MUTANTS.register(
    name="kaiming_fans_swapped",
    bug="Kaiming uniform with fan_in and fan_out swapped",
    caught_by=("init.bounds", "init.variance", "init.ks"),
    options={"scheme": "kaiming", "law": "uniform"},
)
def kaiming_uniform_fans_swapped_(
    tensor: torch.Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator=None,
):
    """mode='fan_in' reads fan_out and vice versa: (out, in) read as (in, out)."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_out, fan_in = _fans(tensor)  # BUG: unpacked in the wrong order
    fan = fan_in if mode == "fan_in" else fan_out
    bound = torch.nn.init.calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)


@MUTANTS.register(
    name="xavier_no_receptive_field",
    bug="Xavier uniform fans without the receptive field (conv weights)",
    caught_by=("init.bounds", "init.variance", "init.ks"),
    options={"scheme": "xavier", "law": "uniform"},
)
def xavier_uniform_no_receptive_field_(tensor: torch.Tensor, gain: float = 1.0, generator=None):
    """Fans from (out, in) alone: right for Linear weights, too wide for every conv kernel."""
    fan_in, fan_out = _fans(tensor, receptive_field=False)  # BUG: ignores shape[2:]
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return tensor.uniform_(-a, a, generator=generator)


@MUTANTS.register(
    name="kaiming_normal_bound_as_std",
    bug="Kaiming normal with the uniform bound gain*sqrt(3/fan) as its std",
    caught_by=("init.variance", "init.ks"),
    options={"scheme": "kaiming", "law": "normal"},
)
def kaiming_normal_bound_as_std_(
    tensor: torch.Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator=None,
):
    """The uniform bound gain*sqrt(3/fan) used as the normal's standard deviation (3x the
    variance): the two samplers' formulas copied into each other."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _fans(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    std = torch.nn.init.calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)  # BUG: 1/fan
    with torch.no_grad():
        return tensor.normal_(0.0, std, generator=generator)

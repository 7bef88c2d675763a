"""Initialisation cases: a weight shape, the sampler's arguments and a seed; the data is drawn by
the target itself (torch.manual_seed(case.seed) first, so a case reproduces).

Shapes are the ones fan bugs hide in: Linear (out, in) and Conv1d/2d/3d weights
(out, in, *kernel) with receptive fields from 1 to 7 per side, and never square in (out, in), so
fan_in != fan_out and a sampler that swaps or ignores a fan gets a different variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import strategies as st

from verify.strategies.common import sizes

SCHEMES = ("xavier", "kaiming")
LAWS = ("uniform", "normal")
#: Samples per case unless the profile asks for more: the quick profile's
#: statistical_samples / 10. The checks' power is computed for this n (verify/checks/init.py).
DEFAULT_SAMPLES = 20_000
#: torch.nn.init.calculate_gain's nonlinearities a Kaiming sampler accepts.
KAIMING_NONLINEARITIES = ("relu", "leaky_relu", "linear", "tanh", "selu", "sigmoid", "conv2d")


@dataclass(frozen=True)
class InitCase:
    """One call of an init sampler, repeated on fresh tensors until ``samples`` values exist."""

    shape: tuple[int, ...]
    gain: float = 1.0  # Xavier's gain
    a: float = 0.0  # Kaiming: leaky_relu's negative slope
    mode: str = "fan_in"  # Kaiming: "fan_in" or "fan_out"
    nonlinearity: str = "leaky_relu"  # Kaiming
    seed: int = 0
    samples: int = DEFAULT_SAMPLES

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def tensors(self) -> int:
        """How many tensors of ``shape`` are drawn: enough for ``samples`` values."""
        return max(1, -(-self.samples // self.numel))


def init_kwargs(scheme: str, case: InitCase) -> dict:
    """The keyword arguments torch.nn.init's sampler of ``scheme`` takes from the case."""
    if scheme == "xavier":
        return {"gain": case.gain}
    if scheme == "kaiming":
        return {"a": case.a, "mode": case.mode, "nonlinearity": case.nonlinearity}
    raise ValueError(f"scheme={scheme!r}: use one of {SCHEMES}")


@st.composite
def weight_shapes(draw, *, max_numel: int = 200_000) -> tuple[int, ...]:
    """(out, in, *kernel) with out != in, kernel sides in 1..7, at most ``max_numel`` values."""
    ndim = draw(st.sampled_from([2, 3, 4, 5]))
    kernel = tuple(draw(st.integers(1, 7)) for _ in range(ndim - 2))
    if ndim == 5:  # a 3-D conv: cubic kernels are the common ones
        kernel = (kernel[0],) * 3 if draw(st.booleans()) else kernel
    budget = max(2, max_numel // math.prod(kernel))
    cap = max(2, min(512, budget // 2))
    out = draw(sizes(max_value=cap))
    inp = draw(sizes(max_value=max(2, min(512, budget // out))))
    if inp == out:  # square (out, in) hides fan swaps: make it unequal
        inp = out + 1 if out * (out + 1) <= budget or out == 1 else out - 1
    return (out, inp, *kernel)


@st.composite
def init_cases(draw, *, scheme: str, samples: int = DEFAULT_SAMPLES) -> InitCase:
    shape = draw(weight_shapes(max_numel=max(2 * samples, 1024)))
    seed = draw(st.integers(0, 2**31 - 1))
    if scheme == "xavier":
        gain = draw(
            st.one_of(
                st.sampled_from([1.0, math.sqrt(2.0), 5.0 / 3.0, 0.75]), st.floats(0.05, 20.0)
            )
        )
        return InitCase(shape=shape, gain=gain, seed=seed, samples=samples)
    nonlinearity = draw(st.sampled_from(KAIMING_NONLINEARITIES))
    a = 0.0
    if nonlinearity == "leaky_relu":
        a = draw(st.one_of(st.sampled_from([0.0, 0.01, 0.2, math.sqrt(5.0)]), st.floats(0.0, 5.0)))
    mode = draw(st.sampled_from(["fan_in", "fan_out"]))
    return InitCase(
        shape=shape, a=a, mode=mode, nonlinearity=nonlinearity, seed=seed, samples=samples
    )

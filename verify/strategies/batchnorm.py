"""Batch-norm cases: a small, printable description Hypothesis draws and shrinks, and the data.

A case holds the shape, hyper-parameters and the *law* of the values (distribution, condition
number kappa, scale, seed); ``make_input`` turns it into the array. Keeping the data out of the
case keeps counterexamples short enough to paste into a reproduction script, and lets Hypothesis
shrink towards simple laws rather than towards individual floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from verify.strategies.common import DISTRIBUTIONS, round_to, sizes

#: Largest finite float16 is 65504: "near the float16 limit" draws magnitudes up to this.
FLOAT16_NEAR_MAX = 6.0e4


@dataclass(frozen=True)
class BNCase:
    shape: tuple[int, ...]
    dtype: str = "float32"
    distribution: str = "normal"
    log10_kappa: float = 0.0  # per-channel |mean|/std ~ 10**log10_kappa (kappa = 1: mean 0)
    log10_scale: float = 0.0  # per-channel std ~ 10**log10_scale
    seed: int = 0
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    noncontiguous: bool = False
    steps: int = 1  # training steps, for running-statistics checks

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def m(self) -> int:
        """Values per channel: N times the spatial size."""
        return self.shape[0] * math.prod(self.shape[2:])


def make_input(case: BNCase, *, step: int = 0) -> np.ndarray:
    """The float64 array the case describes, already rounded to ``case.dtype``.

    Rounding first means the float64 reference sees exactly the values the target sees, so only
    the target's arithmetic is measured.
    """
    rng = np.random.default_rng([case.seed, step])
    n, c = case.shape[0], case.shape[1]
    z = DISTRIBUTIONS[case.distribution](rng, (n, c, *case.shape[2:]))
    scale = 10.0 ** (case.log10_scale + rng.uniform(-0.5, 0.5, size=c))
    kappa = 10.0**case.log10_kappa
    # kappa = sqrt(1 + mean^2/var)  =>  |mean| = std * sqrt(kappa^2 - 1)
    spread = math.sqrt(max(kappa**2 - 1.0, 0.0))
    if case.distribution == "constant":
        spread = max(spread, 1.0)  # a constant channel of zeros would be too easy
    loc = scale * spread * rng.choice([-1.0, 1.0], size=c)
    bshape = (1, c) + (1,) * (len(case.shape) - 2)
    x = loc.reshape(bshape) + scale.reshape(bshape) * z
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if case.distribution == "near_float16_max" and peak > 0:
        # Peak magnitude just under the float16 limit, whatever the scale drawn.
        x = x / peak * FLOAT16_NEAR_MAX
    elif peak > finite_limit(case.dtype):
        # Inputs stay finite in their dtype: overflow on input is not the property under test.
        x = x / peak * finite_limit(case.dtype)
    return round_to(x, case.dtype)


def finite_limit(dtype: str) -> float:
    return FLOAT16_NEAR_MAX if dtype == "float16" else 0.5 * float(np.finfo(np.float32).max)


def make_affine(case: BNCase) -> tuple[np.ndarray, np.ndarray]:
    """gamma and beta: random (gamma of either sign) when affine, else the identity."""
    if not case.affine:
        return np.ones(case.channels), np.zeros(case.channels)
    rng = np.random.default_rng([case.seed, 10_000])
    gamma = rng.normal(1.0, 0.5, size=case.channels)
    beta = rng.normal(0.0, 0.5, size=case.channels)
    return round_to(gamma, "float32"), round_to(beta, "float32")


def make_grad(case: BNCase) -> np.ndarray:
    rng = np.random.default_rng([case.seed, 20_000])
    return round_to(rng.normal(size=case.shape), case.dtype)


DTYPE_KAPPA = {"float32": 4.0, "float64": 6.0, "bfloat16": 1.0, "float16": 2.0}
DTYPE_SCALE = {
    "float32": (-6.0, 6.0),
    "float64": (-6.0, 6.0),
    "bfloat16": (-6.0, 6.0),
    "float16": (-2.0, 2.0),
}


@st.composite
def bn_cases(
    draw,
    *,
    dtype: str = "float32",
    max_elements: int = 20_000,
    min_m: int = 2,
    steps: int = 1,
    momentum=True,
) -> BNCase:
    """Cases reaching the known failure modes: large kappa, constant channels, tiny and huge
    scales, values near the float16 limit, heavy tails, outliers, C = 1, 1x1 spatial, odd sizes,
    non-contiguous inputs. ``max_elements`` caps N*C*H*W (the profile's size budget)."""
    c = draw(st.sampled_from([1, 2, 3, 4, 7, 8, 16]))
    budget = max(max_elements // c, min_m)
    n = draw(sizes(max_value=min(budget, 64), min_value=1))
    h = draw(sizes(max_value=max(1, int(math.sqrt(budget // n))), min_value=1))
    w = draw(sizes(max_value=max(1, budget // (n * h)), min_value=1))
    if n * h * w < min_m:
        n = min_m  # one value per channel is the bad-input check's business, not this one's
    lo, hi = DTYPE_SCALE[dtype]
    dist = draw(st.sampled_from(sorted(DISTRIBUTIONS)))
    if dist == "near_float16_max" and dtype not in ("float16", "float32"):
        dist = "normal"
    return BNCase(
        shape=(n, c, h, w),
        dtype=dtype,
        distribution=dist,
        log10_kappa=draw(st.floats(0.0, DTYPE_KAPPA[dtype])),
        log10_scale=draw(st.floats(lo, hi)),
        seed=draw(st.integers(0, 2**32 - 1)),
        eps=draw(st.sampled_from([1e-5, 1e-3, 1e-1, 1e-8])),
        momentum=draw(st.sampled_from([0.1, 0.5, 1.0, 0.0, None])) if momentum else 0.1,
        affine=draw(st.booleans()),
        track_running_stats=True,
        noncontiguous=draw(st.booleans()),
        steps=steps,
    )

"""SELU and AlphaDropout cases: small, printable descriptions; the data is made from the seed.

- ConstantsCase: one power of two x > 0 (selu(x) = lambda_01 x exactly in the real numbers) and
  one x <= -60 (selu(x) = -lambda_01 alpha_01 to below float64's resolution).
- ForwardCase: a law of inputs reaching the failure modes of the negative branch: tiny |x| (where
  exp(x) - 1 cancels), subnormals, huge magnitudes, exact zeros, the saturated tail.
- MappingCase: moments (mu, omega, nu, tau) from Theorem 1's box of Klambauer et al. 2017, or
  an input law N(mu, nu) directly (omega = tau = 1), and the sample size.
- FixedPointCase: a deep stack of SELU(W x) layers with LeCun-normal W.
- DropoutCase: AlphaDropout's drop probability and the sample size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from theory.selu import THEOREM1_DOMAIN
from verify.strategies.common import round_to, sizes

#: Monte Carlo samples when no profile says otherwise: the quick profile's statistical_samples.
DEFAULT_SAMPLES = 200_000


@dataclass(frozen=True)
class ConstantsCase:
    log2_x: int = 0  # x = 2**log2_x > 0
    x_negative: float = -60.0  # <= -60


@dataclass(frozen=True)
class ForwardCase:
    law: str = "mixed"
    n: int = 1024
    log10_scale: float = 0.0
    seed: int = 0
    dtype: str = "float32"


@dataclass(frozen=True)
class MappingCase:
    mu: float = 0.0
    omega: float = 0.0
    nu: float = 1.0
    tau: float = 1.0
    samples: int = DEFAULT_SAMPLES
    seed: int = 0

    @property
    def input_mean(self) -> float:
        return self.mu * self.omega

    @property
    def input_variance(self) -> float:
        return self.nu * self.tau


@dataclass(frozen=True)
class FixedPointCase:
    width: int = 256
    depth: int = 32
    batch: int = 256
    seed: int = 0


@dataclass(frozen=True)
class DropoutCase:
    p: float = 0.1
    samples: int = DEFAULT_SAMPLES
    seed: int = 0


# --- forward inputs ----------------------------------------------------------------------------


def _finfo(dtype: str) -> torch.finfo:
    return torch.finfo(getattr(torch, dtype))


def _log_uniform(rng, lo: float, hi: float, n: int) -> np.ndarray:
    return 10.0 ** rng.uniform(lo, hi, size=n)


def _signs(rng, n: int) -> np.ndarray:
    return rng.choice([-1.0, 1.0], size=n)


def _laws(dtype: str) -> dict:
    fi = _finfo(dtype)
    tiny_exp = math.log10(fi.tiny)  # smallest normal
    sub_exp = math.log10(fi.smallest_normal * fi.eps)  # smallest subnormal
    huge_exp = math.log10(fi.max / 2)  # lambda_01 x stays finite

    return {
        "normal": lambda rng, n, s: s * rng.normal(size=n),
        "near_zero": lambda rng, n, s: _signs(rng, n) * _log_uniform(rng, tiny_exp, -2.0, n),
        "tiny_negative": lambda rng, n, s: -_log_uniform(rng, -12.0, -3.0, n),
        "subnormal": lambda rng, n, s: _signs(rng, n) * _log_uniform(rng, sub_exp, tiny_exp, n),
        "huge": lambda rng, n, s: _signs(rng, n) * _log_uniform(rng, 3.0, huge_exp, n),
        "negative": lambda rng, n, s: -_log_uniform(rng, -8.0, 3.0, n),
        "saturated": lambda rng, n, s: -rng.uniform(15.0, 200.0, size=n),
    }


FORWARD_LAWS = (
    "mixed",
    "normal",
    "near_zero",
    "tiny_negative",
    "subnormal",
    "huge",
    "negative",
    "saturated",
)
#: Values every mixed case contains: signed zeros, the branch point's neighbours, the constants'
#: evaluation points, and where exp(x) - 1 cancels.
SPECIALS = (0.0, -0.0, 1.0, -1.0, -60.0, 1e-6, -1e-6, -1e-7, -(2.0**-20), 2.0**-20, 0.5, -0.5)


def make_input(case: ForwardCase) -> np.ndarray:
    """The case's inputs as float64 values exactly representable in ``case.dtype``."""
    rng = np.random.default_rng([case.seed, 70_000])
    laws = _laws(case.dtype)
    scale = 10.0**case.log10_scale
    if case.law == "mixed":
        names = sorted(laws)
        parts = [laws[name](rng, max(1, case.n // len(names)), scale) for name in names]
        x = np.concatenate([*parts, np.array(SPECIALS)])
        x = x[rng.permutation(x.size)]
    else:
        x = laws[case.law](rng, case.n, scale)
    return round_to(x, case.dtype)


@st.composite
def forward_cases(draw, *, dtype: str) -> ForwardCase:
    return ForwardCase(
        law=draw(st.sampled_from(FORWARD_LAWS)),
        n=draw(sizes(min_value=1, max_value=4096)),
        log10_scale=draw(st.floats(-3.0, 3.0)),
        seed=draw(st.integers(0, 2**32 - 1)),
        dtype=dtype,
    )


def constants_cases() -> st.SearchStrategy[ConstantsCase]:
    return st.builds(
        ConstantsCase,
        log2_x=st.integers(-30, 30),
        x_negative=st.one_of(st.just(-60.0), st.floats(-1e4, -60.0)),
    )


# --- Monte Carlo cases ---------------------------------------------------------------------------


def _box(name: str):
    lo, hi = THEOREM1_DOMAIN[name]
    return st.floats(float(lo), float(hi))


@st.composite
def mapping_cases(draw, *, samples: int = DEFAULT_SAMPLES) -> MappingCase:
    mu, nu = draw(_box("mu")), draw(_box("nu"))
    if draw(st.booleans()):  # Theorem 1: weights with n E[w] = omega, n E[w^2] = tau
        omega, tau = draw(_box("omega")), draw(_box("tau"))
    else:  # the pre-activation law N(mu, nu) itself
        omega, tau = 1.0, 1.0
    return MappingCase(
        mu=mu, omega=omega, nu=nu, tau=tau, samples=samples, seed=draw(st.integers(0, 2**32 - 1))
    )


def mapping_input(case: MappingCase, dtype: str) -> np.ndarray:
    """z ~ N(mu omega, nu tau): the pre-activation law of the mapping, rounded to ``dtype``."""
    rng = np.random.default_rng([case.seed, 80_000])
    z = case.input_mean + math.sqrt(case.input_variance) * rng.standard_normal(case.samples)
    return round_to(z, dtype)


def fixed_point_cases() -> st.SearchStrategy[FixedPointCase]:
    return st.builds(
        FixedPointCase,
        width=st.sampled_from([256, 320]),
        depth=st.just(32),
        batch=st.just(256),
        seed=st.integers(0, 2**32 - 1),
    )


@st.composite
def dropout_cases(draw, *, samples: int = DEFAULT_SAMPLES) -> DropoutCase:
    p = draw(st.one_of(st.sampled_from([0.05, 0.1, 0.2, 0.5]), st.floats(0.05, 0.5)))
    return DropoutCase(p=p, samples=samples, seed=draw(st.integers(0, 2**32 - 1)))


def dropout_input(case: DropoutCase, dtype: str, n: int | None = None) -> np.ndarray:
    """N(0, 1) inputs (the SNN fixed point), rounded to ``dtype``."""
    rng = np.random.default_rng([case.seed, 90_000])
    return round_to(rng.standard_normal(case.samples if n is None else n), dtype)

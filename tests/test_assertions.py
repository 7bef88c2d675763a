"""verify.assertions.compare at the edge of a storage format's range: a value computed within its
bound of theory.rounding.overflow_threshold may round either to the largest finite value or to
infinity, and neither is an error; past the bound on either side only one of them is right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from theory.rounding import overflow_threshold
from verify.assertions import EXACT, compare


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_overflow_threshold_is_where_rounding_gives_infinity(dtype):
    limit = overflow_threshold(dtype)
    below = limit * (1 - 2.0**-20)  # torch rounds float64 through float32: stay apart in it
    as_dtype = torch.tensor([below, limit], dtype=torch.float64).to(getattr(torch, dtype))
    assert torch.isfinite(as_dtype[0]) and torch.isinf(as_dtype[1])
    assert overflow_threshold("float16") == 65520.0


def _ratio(actual, expected, allowed):
    c = compare(
        np.array([actual]), np.array([expected]), allowed, what="x", bound=EXACT, storage="float16"
    )
    return c.ratio


def test_a_result_near_the_limit_may_round_either_way():
    """torch's float16 batch norm backward on a constant channel at eps 1e-12 (1/sqrt(eps) =
    1e6): an exact -65528.6 (rounds to -inf) computed as -65504, well within its bound."""
    assert _ratio(-65504.0, -65528.6, 1e3) < 1
    assert _ratio(-np.inf, -65510.0, 1e3) < 1  # the other side: rounds finite, computed inf
    assert _ratio(-np.inf, -65510.0, 20.0) == pytest.approx(10.0 / 20.0)  # distance to limit


def test_past_the_bound_only_one_side_is_right():
    assert _ratio(-np.inf, -65000.0, 100.0) == np.inf  # cannot reach the limit
    assert _ratio(-65504.0, -70000.0, 100.0) == np.inf  # every allowed value overflows
    assert _ratio(-np.inf, -70000.0, 100.0) == 0.0
    assert _ratio(np.inf, -65528.6, 1e3) == np.inf  # the wrong infinity
    assert _ratio(-65504.0, -65528.6, 0.0) == np.inf  # exact: it rounds to -inf

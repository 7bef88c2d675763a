"""reference.selu against torch (float64) and the published AlphaDropout constants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reference import selu as rs

# torch's hard-coded SELU constants (aten/src/ATen/native/Activation.cpp), i.e. the paper's.
TORCH_ALPHA = 1.6732632423543772848170429916717
TORCH_SCALE = 1.0507009873554804934193349852946


def test_constants_are_the_derived_ones_and_torchs():
    assert rs.ALPHA_01 == TORCH_ALPHA
    assert rs.LAMBDA_01 == TORCH_SCALE
    assert math.isclose(rs.ALPHA_PRIME, -1.7580993408473766, rel_tol=1e-15)


def _inputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    special = [0.0, -0.0, 1e-300, -1e-300, -1e-12, 1e-12, -1e-5, -40.0, -800.0, 3e300]
    return np.concatenate([rng.normal(0, 3, 100_000), rng.uniform(-1e-3, 1e-3, 1000), special])


def test_selu_matches_torch_float64():
    x = _inputs()
    expected = F.selu(torch.from_numpy(x)).numpy()
    got = rs.selu(x)
    nonzero = expected != 0
    rel = np.abs(got[nonzero] - expected[nonzero]) / np.abs(expected[nonzero])
    assert np.max(rel) <= 1e-14, float(np.max(rel))
    np.testing.assert_array_equal(got[~nonzero], 0.0)


def test_selu_definition_points():
    assert rs.selu(0.0) == 0.0
    assert rs.selu(1.0) == rs.LAMBDA_01
    # expm1, not exp(x) - 1: full relative accuracy next to 0
    assert rs.selu(-1e-20) == pytest.approx(-rs.LAMBDA_01 * rs.ALPHA_01 * 1e-20, rel=1e-15)
    assert rs.selu(-1000.0) == pytest.approx(rs.ALPHA_PRIME, rel=1e-15)


def test_alpha_dropout_affine_published_values():
    a, b = rs.alpha_dropout_affine(0.1)
    assert a == pytest.approx(0.921284516149711, abs=1e-15)
    assert b == pytest.approx(0.161970970057570, abs=1e-15)
    assert rs.alpha_dropout_affine(0.0) == (1.0, 0.0)


@pytest.mark.parametrize("p", [0.05, 0.1, 0.2, 0.5, 0.9])
def test_alpha_dropout_keeps_zero_mean_unit_variance(p):
    """For x with mean 0 and variance 1 the output's two moments are exactly 0 and 1.

    The output is affine in x given the mask, so the moments follow from the two mask values.
    """
    q = 1 - p
    a, b = rs.alpha_dropout_affine(p)
    kept0, dropped = rs.alpha_dropout(0.0, 1.0, p), rs.alpha_dropout(0.0, 0.0, p)
    mean = q * kept0 + (1 - q) * dropped
    second = q * (a**2 + kept0**2) + (1 - q) * dropped**2
    assert mean == pytest.approx(0.0, abs=1e-15)
    assert second == pytest.approx(1.0, rel=1e-14)


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_alpha_dropout_matches_torch_given_its_mask(p):
    torch.manual_seed(0)
    x = torch.randn(20_000, dtype=torch.float64)
    out = F.alpha_dropout(x, p=p, training=True).numpy()
    a, b = rs.alpha_dropout_affine(p)
    dropped_value = a * rs.ALPHA_PRIME + b
    mask = ~np.isclose(out, dropped_value, rtol=1e-13, atol=0)  # x == alpha' has probability 0
    assert abs(1 - mask.mean() - p) < 0.02  # the mask really is Bernoulli(1 - p)
    expected = rs.alpha_dropout(x.numpy(), mask.astype(np.float64), p)
    np.testing.assert_allclose(expected, out, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: rs.alpha_dropout_affine(1.0), r"p \(the drop probability\) must lie in \[0, 1\)"),
        (lambda: rs.alpha_dropout_affine(-0.1), "p=-0.1"),
        (lambda: rs.alpha_dropout(np.ones(3), np.ones(2), 0.1), "mask must have the shape"),
        (lambda: rs.alpha_dropout(np.ones(2), np.array([0.5, 1]), 0.1), "only 0"),
        (lambda: rs.selu(np.ones(2, complex)), "real"),
    ],
)
def test_bad_input_raises_clear_errors(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()

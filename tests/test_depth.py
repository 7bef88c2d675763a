"""The depth stage: variance and gradient norms through depth follow the theory's curves."""

from __future__ import annotations

import math

import pytest

from verify.depth import experiments


@pytest.fixture(scope="module")
def curves():
    return experiments.curves()


def test_depth_curves_shape(curves):
    assert set(curves) == set(experiments.DESCRIPTIONS)
    for xs, measured, theory in curves.values():
        assert xs == list(range(experiments.DEPTH + 1))
        assert len(measured) == len(theory) == len(xs)
        assert all(math.isfinite(v) and v > 0 for v in measured + theory)


def test_he_relu_variance_stays_constant(curves):
    _, measured, theory = curves["he_relu"]
    assert all(t == pytest.approx(theory[0]) for t in theory)
    assert all(0.5 <= m / measured[0] <= 2.0 for m in measured)


def test_xavier_relu_variance_halves_per_layer(curves):
    _, measured, theory = curves["xavier_relu"]
    for layer in range(1, len(measured)):
        assert theory[layer] / theory[layer - 1] == pytest.approx(0.5)
        assert 0.4 <= measured[layer] / measured[layer - 1] <= 0.6, layer


def test_selu_and_bn_stay_at_one(curves):
    for name in ("lecun_selu", "bn_relu"):
        _, measured, theory = curves[name]
        assert all(t == pytest.approx(1.0, rel=1e-2) for t in theory), name
        assert all(0.8 <= m <= 1.25 for m in measured), name


def test_residual_stream_linear_with_bn_doubling_without(curves):
    xs, measured, theory = curves["residual_bn"]
    depth_l = xs[-1]
    assert theory[-1] == pytest.approx(measured[0] + depth_l)
    assert measured[-1] == pytest.approx(depth_l + 1, rel=0.25)
    _, plain, doubling = curves["residual_plain"]
    assert doubling[-1] == pytest.approx(plain[0] * 2**depth_l)
    assert plain[-1] > 1e3 * measured[-1]  # exponential against linear


def test_gradient_plain_bn_relu_explodes_residual_does_not(curves):
    xs, plain, theory = curves["grad_plain_bn_relu"]
    d = xs[-1]
    assert theory[1] == pytest.approx(math.pi / (math.pi - 1))
    per_layer = plain[-1] ** (1 / d)
    assert per_layer == pytest.approx(math.pi / (math.pi - 1), rel=0.05)
    _, res, res_theory = curves["grad_residual_bn"]
    assert res[-1] < plain[-1] / 10
    for m, t in zip(res, res_theory, strict=True):
        assert m == pytest.approx(t, rel=0.25)

"""theory.propagation: sigmoid's derivative bound, the BN-ReLU gradient growth constant and the
forward variance recursion for Xavier, He and SELU."""

from __future__ import annotations

import math

import mpmath
import pytest
import sympy as sp
import torch

import theory
from theory import propagation as prop


def test_sigmoid_derivative_max_is_a_quarter_at_zero():
    x_star, d_max = prop.sigmoid_derivative_max_expr()
    assert x_star == 0 and d_max == sp.Rational(1, 4)
    x = torch.linspace(-20, 20, 400_001, dtype=torch.float64, requires_grad=True)
    torch.sigmoid(x).sum().backward()
    assert x.grad.max().item() == pytest.approx(0.25, abs=1e-12)
    assert x.grad.max().item() <= 0.25


def test_sigmoid_depth_bound():
    assert prop.sigmoid_gradient_bound([2.0, 2.0, 2.0]) == pytest.approx(1 / 8)
    assert prop.sigmoid_gradient_bound([1.0] * 10) == pytest.approx(0.25**10)
    assert theory.get("propagation.sigmoid_depth_bound").as_float() == pytest.approx(0.25**10)


def test_bn_relu_gradient_growth_is_pi_over_pi_minus_one():
    expr = prop.bn_gradient_growth_expr("relu")
    assert sp.simplify(expr - sp.pi / (sp.pi - 1)) == 0
    o = theory.get("propagation.bn_relu_gradient_growth")
    assert abs(o.value - mpmath.mpf("1.466942207")) <= 1e-9


def test_bn_gradient_growth_is_one_for_linear_and_exceeds_one_for_leaky():
    assert prop.bn_gradient_growth_expr("linear") == 1
    leaky = prop.bn_gradient_growth_expr("leaky_relu")
    assert sp.simplify(leaky.subs(prop.a, 1) - 1) == 0
    for slope in (0, sp.Rational(1, 100), sp.Rational(1, 2)):
        assert leaky.subs(prop.a, slope) > 1


@pytest.mark.parametrize("depth", [1, 10, 50])
def test_he_relu_keeps_variance_xavier_relu_halves_it(depth):
    assert prop.variance_through_depth(depth)[-1] == pytest.approx(1.0, rel=1e-12)
    xavier = prop.variance_through_depth(depth, weight_scale=1.0)
    assert xavier[-1] == pytest.approx(0.5**depth, rel=1e-12)
    leaky = prop.variance_through_depth(
        depth, activation="leaky_relu", weight_scale=2 / (1 + 0.2**2), negative_slope=0.2
    )
    assert leaky[-1] == pytest.approx(1.0, rel=1e-12)


def test_selu_stays_at_its_fixed_point_and_is_attracted_to_it():
    assert prop.variance_through_depth(20, activation="selu", weight_scale=1.0)[-1] == (
        pytest.approx(1.0, rel=1e-12)
    )
    for var0 in (0.5, 2.0):
        qs = prop.variance_through_depth(40, activation="selu", weight_scale=1.0, var0=var0)
        assert abs(qs[-1] - 1) < abs(qs[0] - 1) * 1e-2


def test_tanh_variance_shrinks_with_gain_one():
    qs = prop.variance_through_depth(10, activation="tanh", weight_scale=1.0)
    assert all(b < a for a, b in zip(qs, qs[1:], strict=False))
    m2 = prop.second_moment("tanh", 1.0)
    assert float(m2) == pytest.approx(0.3942944903978412, rel=1e-12)


def test_variance_ratios():
    assert theory.get("propagation.variance_ratio_he_relu").as_float() == 1.0
    assert theory.get("propagation.variance_ratio_xavier_relu").as_float() == 0.5
    assert theory.get("propagation.variance_ratio_lecun_selu").as_float() == pytest.approx(1.0)


def test_second_moment_is_homogeneous_for_relu():
    assert float(prop.second_moment("relu", 3.0)) == pytest.approx(1.5)
    assert float(prop.second_moment("leaky_relu", 2.0, negative_slope=0.5)) == pytest.approx(1.25)
    assert float(prop.second_moment("linear", 4.0)) == pytest.approx(4.0)
    assert math.isclose(float(prop.second_moment("selu", 1.0)), 1.0, rel_tol=1e-14)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: prop.sigmoid_gradient_bound([]), "weight_norms=[]"),
        (lambda: prop.bn_gradient_growth_expr("gelu"), "activation='gelu'"),
        (lambda: prop.variance_through_depth(-2), "depth=-2"),
        (lambda: prop.variance_through_depth(3, weight_scale=0.0), "weight_scale=0.0"),
        (lambda: prop.variance_through_depth(3, activation="swish"), "activation='swish'"),
        (lambda: prop.second_moment("relu", -1.0), "q=-1.0"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call()

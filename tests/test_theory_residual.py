"""theory.residual: stream variance recurrences, the identity path of the gradient, initial loss."""

from __future__ import annotations

import math

import mpmath
import pytest
import sympy as sp
import torch

import theory
from theory import residual as res


def test_uncorrelated_variances_add():
    vx, vf = sp.symbols("var_x var_F", positive=True)
    assert sp.simplify(res.add_variance_expr() - (vx + vf)) == 0


def test_recurrences_solve_to_linear_and_geometric_growth():
    L, var0, gain = sp.symbols("L var0 gain")

    def by_name(expr):  # compare regardless of the symbols' assumptions
        return expr.subs({s: sp.Symbol(s.name) for s in expr.free_symbols})

    assert sp.simplify(by_name(res.stream_variance_expr("bn")) - (var0 + L)) == 0
    assert sp.simplify(by_name(res.stream_variance_expr("gain")) - var0 * (1 + gain**2) ** L) == 0


@pytest.mark.parametrize("depth", [0, 1, 5, 50])
def test_stream_variance(depth):
    assert res.stream_variance(depth) == pytest.approx(1 + depth)
    assert res.stream_variance(depth, var0=3.0) == pytest.approx(3 + depth)
    assert res.stream_variance(depth, branch="doubling") == pytest.approx(2.0**depth)
    assert res.stream_variance(depth, branch=0.5, var0=2.0) == pytest.approx(2 * 1.25**depth)
    assert res.stream_variance(depth, branch=0.0) == pytest.approx(1.0)


def test_bn_branch_grows_linearly_not_doubling():
    # One step of each recurrence from the same state: BN adds 1, doubling adds Var(x_l).
    for depth in range(1, 10):
        bn_step = res.stream_variance(depth) - res.stream_variance(depth - 1)
        dbl_step = res.stream_variance(depth, branch="doubling") - res.stream_variance(
            depth - 1, branch="doubling"
        )
        assert bn_step == pytest.approx(1.0)
        assert dbl_step == pytest.approx(res.stream_variance(depth - 1, branch="doubling"))


def test_stream_variance_matches_a_simulated_residual_stack():
    # Small exact check with torch: a BN'd branch independent of x adds 1 to the variance.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, dtype=torch.float64, generator=g)
    for _ in range(4):
        branch = torch.randn(x.shape, dtype=torch.float64, generator=g)
        x = x + (branch - branch.mean()) / branch.std()
    assert x.var().item() == pytest.approx(res.stream_variance(4), rel=0.02)


@pytest.mark.parametrize("n", range(1, 5))
def test_identity_path(n):
    assert res.identity_path_holds(n)


def test_linear_block_jacobian_is_identity_plus_w():
    j = res.linear_block_jacobian_expr(3)
    w = sp.Matrix(3, 3, lambda i, k: sp.Symbol(f"w{i}{k}", real=True))
    assert j == sp.eye(3) + w
    o = theory.get("residual.linear_block_jacobian")
    assert o.as_float() == [[1.1, -0.2], [0.3, 0.6]]


def test_initial_loss_is_ln_c():
    o = theory.get("residual.initial_loss")
    assert abs(o.value - mpmath.mpf("2.302585")) <= 1e-6
    assert res.initial_loss(10) == pytest.approx(math.log(10), rel=1e-15)
    logits = torch.full((8, 10), 0.37, dtype=torch.float64)
    target = torch.arange(8) % 10
    torch_loss = torch.nn.functional.cross_entropy(logits, target).item()
    assert res.initial_loss(10) == pytest.approx(torch_loss, rel=1e-15)
    assert res.initial_loss(1000) == pytest.approx(math.log(1000), rel=1e-15)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: res.stream_variance(-1), "depth=-1"),
        (lambda: res.stream_variance(3, var0=0.0), "var0=0.0"),
        (lambda: res.stream_variance(3, branch="ln"), "branch='ln'"),
        (lambda: res.stream_variance(3, branch=-1.0), "branch=-1.0"),
        (lambda: res.block_jacobian(0), "n=0"),
        (lambda: res.initial_loss(1), "num_classes=1"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()

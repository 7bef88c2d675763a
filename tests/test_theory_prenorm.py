"""theory.prenorm: the stream's variance (symbolic and simulated), the identity path of the
gradient, the fused add + norm backward (proved, and against torch autograd), the oracles, and the
registration of the normalisation modules in theory.MODULES."""

from __future__ import annotations

import re

import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from published import incomplete, mismatch

import theory
from theory import groupnorm, layernorm, residual, rmsnorm
from theory import prenorm as pn


def _by_name(expr):  # compare regardless of the symbols' assumptions
    return expr.subs({s: sp.Symbol(s.name) for s in expr.free_symbols})


def test_variances_add_and_grow_linearly():
    var_h, var_f, var0, depth = sp.symbols("var_h var_F var0 L")
    assert sp.simplify(_by_name(pn.add_variance_expr()) - (var_h + var_f)) == 0
    assert sp.simplify(_by_name(pn.stream_variance_expr()) - (var0 + depth * var_f)) == 0


@pytest.mark.parametrize("depth", [0, 1, 7, 48])
def test_stream_variance(depth):
    assert pn.stream_variance(depth) == pytest.approx(1 + depth)
    assert pn.stream_variance(depth, var0=2.0, branch_variance=0.5) == pytest.approx(2 + depth / 2)


@pytest.mark.parametrize("norm", pn.NORMS)
def test_simulated_pre_norm_stack_grows_linearly(norm):
    """h <- h + W norm(h) with fresh W ~ N(0, 1/n): Var(h_L) = var0 + L (Var F = var/(var+eps)
    ~ 1), where the same stack without the norm doubles (theory.residual)."""
    g = torch.Generator().manual_seed(3)
    rows, n, depth, var0 = 2000, 256, 8, 4.0
    h = torch.randn(rows, n, generator=g, dtype=torch.float64) * var0**0.5
    plain = h.clone()
    for _ in range(depth):
        w = torch.randn(n, n, generator=g, dtype=torch.float64) / n**0.5
        u = F.layer_norm(h, (n,)) if norm == "layer" else F.rms_norm(h, (n,))
        h = h + u @ w
        plain = plain + plain @ w
    assert h.var().item() == pytest.approx(pn.stream_variance(depth, var0=var0), rel=0.03)
    doubling = residual.stream_variance(depth, var0=var0, branch="doubling")
    assert plain.var().item() == pytest.approx(doubling, rel=0.1)


@pytest.mark.parametrize("norm", pn.NORMS)
@pytest.mark.parametrize("n", [2, 3])
def test_branch_input_is_scale_invariant(norm, n):
    assert pn.branch_input_is_scale_invariant(n, norm=norm)


def test_eps_breaks_scale_invariance_only_for_small_streams():
    x = [0.3, -1.0, 2.0]
    for norm in pn.NORMS:
        big = pn.normalize([1e3 * v for v in x], norm=norm, eps=1e-5)
        tiny = pn.normalize([1e-4 * v for v in x], norm=norm, eps=1e-5)
        exact = pn.normalize(x, norm=norm, eps=0.0)
        assert big == pytest.approx(exact, rel=1e-10)
        assert abs(tiny[2] - exact[2]) > 0.1  # a stream at the scale of sqrt(eps) is shrunk


@pytest.mark.parametrize("norm", pn.NORMS)
@pytest.mark.parametrize("n", [2, 3])
def test_identity_path_and_orthogonal_branch_gradient(norm, n):
    assert pn.identity_path_holds(n, norm=norm)
    assert pn.norm_jacobian_annihilates_stream(n, norm=norm)


@pytest.mark.parametrize("norm", pn.NORMS)
def test_identity_path_numerically(norm):
    g = torch.Generator().manual_seed(4)
    n = 5
    w = torch.randn(n, n, generator=g, dtype=torch.float64)
    h = torch.randn(n, generator=g, dtype=torch.float64) * 3 + 1

    def branch(v):
        u = F.layer_norm(v, (n,), eps=0.0) if norm == "layer" else F.rms_norm(v, (n,), eps=0.0)
        return torch.tanh(w @ u)

    jac_block = torch.autograd.functional.jacobian(lambda v: v + branch(v), h)
    jac_branch = torch.autograd.functional.jacobian(branch, h)
    assert torch.allclose(jac_block - jac_branch, torch.eye(n, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(jac_branch @ h, torch.zeros(n, dtype=torch.float64), atol=1e-12)


# -- the fused tail --------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", pn.NORMS)
@pytest.mark.parametrize("n", [2, 3])
def test_fused_backward_proved(norm, n):
    assert pn.fused_backward_matches(n, norm=norm)


def _no_stream_gradient(x, residual, dy, dres, *, norm, weight, eps):
    """The mutant: d(residual_out) dropped (only the normalised output's gradient flows back)."""
    dx, _ = pn.fused_backward_closed_form(
        x, residual, dy, [0] * len(x), norm=norm, weight=weight, eps=eps
    )
    return dx, list(dx)


def _norm_of_branch_only(x, residual, dy, dres, *, norm, weight, eps):
    """The mutant: the norm's gradient evaluated at x instead of at residual_out = x + residual."""
    zeros = [0] * len(x)
    dx, _ = pn.fused_backward_closed_form(x, zeros, dy, dres, norm=norm, weight=weight, eps=eps)
    return dx, list(dx)


@pytest.mark.parametrize("mutant", [_no_stream_gradient, _norm_of_branch_only])
@pytest.mark.parametrize("norm", pn.NORMS)
def test_fused_proof_rejects_wrong_backward(mutant, norm):
    assert not pn.fused_backward_matches(2, norm=norm, closed_form=mutant)


@pytest.mark.parametrize("norm", pn.NORMS)
def test_fused_closed_form_matches_torch_autograd(norm):
    g = torch.Generator().manual_seed(5)
    n, eps = 6, 1e-6
    x, r, dy, dres, w = (
        torch.randn(n, generator=g, dtype=torch.float64).requires_grad_() for _ in range(5)
    )
    res = x + r
    y = F.layer_norm(res, (n,), w, eps=eps) if norm == "layer" else F.rms_norm(res, (n,), w, eps)
    ((dy.detach() * y).sum() + (dres.detach() * res).sum()).backward()
    values = [t.detach().tolist() for t in (x, r, dy, dres, w)]
    dx, dr = pn.fused_backward_closed_form(*values[:4], norm=norm, weight=values[4], eps=eps)
    assert dx == pytest.approx(x.grad.tolist(), rel=1e-12, abs=1e-13)
    assert dr == pytest.approx(r.grad.tolist(), rel=1e-12, abs=1e-13)


# -- oracles, registry, argument errors ------------------------------------------------------------


@pytest.mark.parametrize("oracle", pn.oracles(), ids=lambda o: o.name)
def test_oracles_match_published_and_reevaluate(oracle):
    assert oracle.name.startswith("prenorm.")
    assert oracle.published is not None
    assert mismatch(oracle) is None
    assert incomplete(oracle) is None


def test_fused_oracle_is_the_closed_form_at_its_example():
    o = {o.name: o for o in pn.oracles()}["prenorm.fused_backward_dx"]
    half = sp.Rational(1, 2)
    dx, _ = pn.fused_backward_closed_form(
        [1, -1, 2],
        [0, -1, 2],
        [1, -1, 3],
        [half, 0, 0],
        norm="rms",
        weight=[2, 1, -half],
        eps=sp.Rational(1, 10**6),
    )
    assert float(o.value) == pytest.approx(float(dx[0]), rel=1e-15)


def test_normalisation_modules_are_registered_with_unique_names():
    # (building theory.all_oracles() derives every module's oracles, some slow: check ours here;
    # the registry itself refuses duplicates across modules when it is built)
    mine = (layernorm, rmsnorm, groupnorm, pn)
    assert all(m in theory.MODULES for m in mine)
    names = [o.name for m in mine for o in m.oracles()]
    assert len(names) == len(set(names))
    for m in mine:
        family = m.__name__.removeprefix("theory.")
        assert all(re.fullmatch(rf"{family}\.[a-z0-9_]+", o.name) for o in m.oracles()), family


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pn.stream_variance(-1), "depth=-1"),
        (lambda: pn.stream_variance(3, var0=0.0), "var0=0.0"),
        (lambda: pn.stream_variance(3, branch_variance=-1.0), "branch_variance=-1.0"),
        (lambda: pn.normalize([1.0, 2.0], norm="batch"), "norm='batch'"),
        (lambda: pn.fused_forward([1.0], [1.0, 2.0], norm="rms"), "len(x)=1"),
        (lambda: pn.fused_forward([1.0], [2.0], norm="rms", bias=[0.0]), "bias"),
        (lambda: pn.identity_path_holds(1, norm="rms"), "n=1"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()

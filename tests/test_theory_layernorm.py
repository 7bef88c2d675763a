"""theory.layernorm: the symbolic proofs (and that they can fail), the closed form against torch's
layer_norm autograd in float64, and the oracles against their published forms."""

from __future__ import annotations

import re

import mpmath
import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from published import incomplete, mismatch

from theory import batchnorm
from theory import layernorm as ln


@pytest.mark.parametrize("n", range(2, 7))
def test_forward_output_moments(n):
    assert ln.forward_moments_match(n)


@pytest.mark.parametrize("n", range(2, 7))
def test_autodiff_backward_equals_closed_form(n):
    assert ln.backward_matches_closed_form(n)


@pytest.mark.parametrize("n", [2, 3])
def test_parameter_gradients_sum_over_rows(n):
    # Two rows with their own variances: the device replaces each sqrt(var_r + eps) on its own.
    assert ln.backward_matches_closed_form(n, rows=2)


def _constant_stats(x, dy, *, weight, eps):
    """The mutant: mean and variance treated as constants, dx = g / sigma."""
    _, dweight, dbias = ln.backward_closed_form(x, dy, weight=weight, eps=eps)
    dx = []
    for xr, dyr in zip(x, dy, strict=True):
        _, var = ln.row_moments(xr)
        dx.append([d * w / sp.sqrt(var + eps) for d, w in zip(dyr, weight, strict=True)])
    return dx, dweight, dbias


def _weight_outside_sums(x, dy, *, weight, eps):
    """The mutant: batch norm's formula with its per-channel gamma read as a per-element factor,
    dx_j = w_j/(n sigma) [n dy_j - sum dy - xhat_j sum(dy xhat)], right for a uniform weight
    only."""
    dx1, dweight, dbias = ln.backward_closed_form(x, dy, weight=None, eps=eps)
    dx = [[w * v for v, w in zip(row, weight, strict=True)] for row in dx1]
    return dx, dweight, dbias


def _last_row_only(x, dy, *, weight, eps):
    """The mutant: dweight and dbias from the last row instead of the sum over rows."""
    dx, _, _ = ln.backward_closed_form(x, dy, weight=weight, eps=eps)
    _, dweight, dbias = ln.backward_closed_form(x[-1:], dy[-1:], weight=weight, eps=eps)
    return dx, dweight, dbias


@pytest.mark.parametrize("mutant", [_constant_stats, _weight_outside_sums])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_proof_rejects_wrong_backward(mutant, n):
    assert not ln.backward_matches_closed_form(n, closed_form=mutant)


def test_proof_rejects_parameter_gradients_of_one_row():
    assert not ln.backward_matches_closed_form(2, rows=2, closed_form=_last_row_only)


def test_proof_device_never_answers_true_when_eps_survives():
    x, _ = ln.forward_symbolic(2)
    _, var = ln.row_moments(x)
    # eps outside any root with two radicands: undecidable by the device, so False, not True.
    assert not ln.vanishes(ln.eps, under_sqrt=[var + ln.eps, var + 2 * ln.eps])


@pytest.mark.parametrize(
    ("shape", "normalized_shape"), [((5, 7), (7,)), ((2, 3, 4), (3, 4)), ((4, 1, 2), (2,))]
)
def test_closed_form_matches_torch_autograd(shape, normalized_shape):
    g = torch.Generator().manual_seed(0)
    eps = 1e-5
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 2).requires_grad_()
    w = torch.randn(normalized_shape, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(normalized_shape, generator=g, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    F.layer_norm(x, normalized_shape, w, b, eps=eps).backward(dy)
    n = w.numel()
    rows = lambda t: t.detach().reshape(-1, n).tolist()  # noqa: E731
    dx, dweight, dbias = ln.backward_closed_form(
        rows(x), rows(dy), weight=w.detach().reshape(-1).tolist(), eps=eps
    )
    assert sum(dx, []) == pytest.approx(x.grad.reshape(-1).tolist(), rel=1e-12, abs=1e-13)
    assert dweight == pytest.approx(w.grad.reshape(-1).tolist(), rel=1e-12, abs=1e-13)
    assert dbias == pytest.approx(b.grad.reshape(-1).tolist(), rel=1e-12, abs=1e-13)


def test_mutants_differ_from_torch_numerically():
    """The proofs' mutants are not merely differently written: they give other numbers."""
    x, dy, w = [[1.0, 2.0, 4.0]], [[1.0, -1.0, 3.0]], [2.0, 1.0, -0.5]
    dx, _, _ = ln.backward_closed_form(x, dy, weight=w)
    for mutant in (_constant_stats, _weight_outside_sums):
        wrong, _, _ = mutant(x, dy, weight=w, eps=1e-5)
        assert max(abs(a - float(b)) for a, b in zip(dx[0], wrong[0], strict=True)) > 0.1


def test_closed_form_on_mpmath_agrees_with_exact_sympy():
    x, dy, w = [[1, 2, 4], [0, -3, 1]], [[1, -1, 3], [2, 0, -1]], [2, 1, sp.Rational(-1, 2)]
    e = sp.Rational(1, 10**5)
    exact_rows = lambda rows: [[sp.Integer(v) for v in r] for r in rows]  # noqa: E731
    exact = ln.backward_closed_form(exact_rows(x), exact_rows(dy), weight=w, eps=e)
    with mpmath.workdps(50):
        mp = lambda rows: [[mpmath.mpf(v) for v in r] for r in rows]  # noqa: E731
        got = ln.backward_closed_form(
            mp(x), mp(dy), weight=[mpmath.mpf(2), 1, -0.5], eps=mpmath.mpf(e.p) / e.q
        )
        flat = lambda r: [*sum(r[0], []), *r[1], *r[2]]  # noqa: E731
        for a, b in zip(flat(got), flat(exact), strict=True):
            assert abs(a - mpmath.mpf(str(sp.N(b, 50)))) < mpmath.mpf(10) ** -45


def test_unit_weight_row_is_batchnorm_channel():
    """With weight 1, a row's dx is batch norm's per-channel dx with m = n (same derivation)."""
    x, dy = [0.3, -1.2, 2.5, 0.0, 1.1], [1.0, 0.5, -2.0, 0.25, 3.0]
    (dx,), dweight, dbias = ln.backward_closed_form([x], [dy], eps=1e-3)
    bn_dx, bn_dgamma, bn_dbeta = batchnorm.backward_closed_form(x, dy, gamma=1, eps=1e-3)
    assert dx == pytest.approx(bn_dx, rel=1e-14)
    assert sum(dweight) == pytest.approx(bn_dgamma, rel=1e-14)
    assert sum(dbias) == pytest.approx(bn_dbeta, rel=1e-14)


@pytest.mark.parametrize("oracle", ln.oracles(), ids=lambda o: o.name)
def test_oracles_match_published_and_reevaluate(oracle):
    assert oracle.name.startswith("layernorm.")
    assert oracle.published is not None
    assert mismatch(oracle) is None
    assert incomplete(oracle) is None


def test_published_check_can_fail():
    o = {o.name: o for o in ln.oracles()}["layernorm.output_variance"]
    wrong = type(o)(**{**o.__dict__, "published": "var/(var+2*eps)"})
    assert mismatch(wrong) is not None
    o = {o.name: o for o in ln.oracles()}["layernorm.output_mean"]
    assert mismatch(type(o)(**{**o.__dict__, "published": "1"})) is not None


def test_dx_oracle_is_the_closed_form_at_its_example():
    o = {o.name: o for o in ln.oracles()}["layernorm.backward_dx"]
    dx, _, _ = ln.backward_closed_form(
        [[1, 2, 4]], [[1, -1, 3]], weight=[2, 1, sp.Rational(-1, 2)], eps=sp.Rational(1, 10**5)
    )
    assert float(o.value) == pytest.approx(float(dx[0][0]), rel=1e-15)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ln.forward_moments_match(1), "n=1"),
        (lambda: ln.backward_matches_closed_form(2, rows=0), "rows=0"),
        (lambda: ln.backward_closed_form([], []), "len(x)=0"),
        (lambda: ln.backward_closed_form([[1.0]], [[1.0]]), "n >= 2"),
        (lambda: ln.backward_closed_form([[1.0, 2.0]], [[1.0]]), "same length"),
        (
            lambda: ln.backward_closed_form([[1.0, 2.0]], [[1.0, 0.0]], weight=[1.0]),
            "len(weight)=1",
        ),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()

"""theory.rmsnorm: the symbolic proofs (and that they can fail), the closed form against torch's
rms_norm autograd in float64, torch's eps=None measured, and the oracles' published forms."""

from __future__ import annotations

import re

import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from published import incomplete, mismatch

from theory import layernorm
from theory import rmsnorm as rms


@pytest.mark.parametrize("n", range(2, 7))
def test_forward_output_mean_square(n):
    assert rms.forward_moments_match(n)


@pytest.mark.parametrize("n", range(2, 7))
def test_autodiff_backward_equals_closed_form(n):
    assert rms.backward_matches_closed_form(n)


def test_weight_gradient_sums_over_rows():
    assert rms.backward_matches_closed_form(3, rows=2)


def _missing_projection(x, dy, *, weight, eps):
    """The mutant: dx = g / r, without - xhat mean(g xhat) (the RMS treated as a constant)."""
    _, dweight = rms.backward_closed_form(x, dy, weight=weight, eps=eps)
    dx = []
    for xr, dyr in zip(x, dy, strict=True):
        r = sp.sqrt(rms.mean_square(xr) + eps)
        dx.append([d * w / r for d, w in zip(dyr, weight, strict=True)])
    return dx, dweight


def _layer_norm_formula(x, dy, *, weight, eps):
    """The mutant: layer norm's backward (centred statistics) used for RMSNorm."""
    dx, dweight, _ = layernorm.backward_closed_form(x, dy, weight=weight, eps=eps)
    return dx, dweight


def _sum_instead_of_mean(x, dy, *, weight, eps):
    """The mutant: xhat sum(g xhat) instead of xhat mean(g xhat) (a factor n off)."""
    dx, dweight = rms.backward_closed_form(x, dy, weight=weight, eps=eps)
    n = len(x[0])
    wrong = []
    for xr, dyr, dxr in zip(x, dy, dx, strict=True):
        r = sp.sqrt(rms.mean_square(xr) + eps)
        g = [d * w for d, w in zip(dyr, weight, strict=True)]
        wrong.append([n * v - (n - 1) * gi / r for v, gi in zip(dxr, g, strict=True)])
    return wrong, dweight


@pytest.mark.parametrize(
    ("mutant", "n"),
    [
        *((m, n) for m in (_missing_projection, _sum_instead_of_mean) for n in (2, 3, 5)),
        # a foreign radicand (var + eps) leaves a root the device cannot clear: slow beyond n = 3
        (_layer_norm_formula, 2),
        (_layer_norm_formula, 3),
    ],
)
def test_proof_rejects_wrong_backward(mutant, n):
    assert not rms.backward_matches_closed_form(n, closed_form=mutant)


@pytest.mark.parametrize(("shape", "normalized_shape"), [((5, 7), (7,)), ((2, 3, 4), (3, 4))])
def test_closed_form_matches_torch_autograd(shape, normalized_shape):
    g = torch.Generator().manual_seed(1)
    eps = 1e-6
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    w = torch.randn(normalized_shape, generator=g, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    F.rms_norm(x, normalized_shape, w, eps=eps).backward(dy)
    n = w.numel()
    rows = lambda t: t.detach().reshape(-1, n).tolist()  # noqa: E731
    dx, dweight = rms.backward_closed_form(
        rows(x), rows(dy), weight=w.detach().reshape(-1).tolist(), eps=eps
    )
    assert sum(dx, []) == pytest.approx(x.grad.reshape(-1).tolist(), rel=1e-12, abs=1e-13)
    assert dweight == pytest.approx(w.grad.reshape(-1).tolist(), rel=1e-12, abs=1e-13)


# -- eps=None --------------------------------------------------------------------------------------

#: Inputs small enough that eps decides the output (ms = 1e-6 for float32 and half precisions,
#: 1e-16 for float64), so different eps values give visibly different y.
_EPS_PROBE = {
    torch.float32: 1e-3,
    torch.bfloat16: 1e-3,
    torch.float16: 1e-3,
    torch.float64: 1e-8,
}


@pytest.mark.parametrize("dtype", list(_EPS_PROBE), ids=str)
def test_eps_none_is_finfo_of_the_computation_type(dtype):
    """Measured with torch 2.13: eps=None is finfo(float32).eps = 2^-23 for float32, bfloat16 and
    float16 inputs, finfo(float64).eps = 2^-52 for float64 -- the opmath type, not the input's
    own finfo (2^-7 for bfloat16, 2^-10 for float16)."""
    x = torch.full((2, 8), _EPS_PROBE[dtype], dtype=dtype)
    x[1] *= torch.linspace(0.5, 2.0, 8, dtype=torch.float64).to(dtype)
    y_none = F.rms_norm(x, (8,), eps=None)
    assert torch.equal(y_none, F.rms_norm(x, (8,), eps=rms.default_eps(dtype)))
    assert torch.equal(torch.nn.RMSNorm(8, dtype=dtype)(x), y_none)
    own = torch.finfo(dtype).eps
    if own != rms.default_eps(dtype):
        # the input dtype's finfo gives a different output: the rule is not finfo(dtype)
        assert not torch.allclose(y_none, F.rms_norm(x, (8,), eps=own))
    # and y matches the float64 formula with the documented eps (to the output's rounding)
    xd = x.double()
    expected = xd / torch.sqrt((xd * xd).mean(-1, keepdim=True) + rms.default_eps(dtype))
    u = {torch.float64: 2**-53, torch.float32: 2**-24}.get(dtype, torch.finfo(dtype).eps / 2)
    assert torch.allclose(y_none.double(), expected, rtol=8 * u, atol=0)


def test_default_eps_values_and_errors():
    assert rms.default_eps("float32") == 2.0**-23 == torch.finfo(torch.float32).eps
    assert rms.default_eps(torch.bfloat16) == 2.0**-23
    assert rms.default_eps("torch.float16") == 2.0**-23
    assert rms.default_eps("float64") == 2.0**-52 == torch.finfo(torch.float64).eps
    with pytest.raises(ValueError, match=re.escape("dtype='int8'")):
        rms.default_eps("int8")


# -- oracles and argument errors -------------------------------------------------------------------


@pytest.mark.parametrize("oracle", rms.oracles(), ids=lambda o: o.name)
def test_oracles_match_published_and_reevaluate(oracle):
    assert oracle.name.startswith("rmsnorm.")
    assert oracle.published is not None
    assert mismatch(oracle) is None
    assert incomplete(oracle) is None


def test_dx_oracle_is_the_closed_form_at_its_example():
    o = {o.name: o for o in rms.oracles()}["rmsnorm.backward_dx"]
    dx, _ = rms.backward_closed_form(
        [[1, -2, 4]], [[1, -1, 3]], weight=[2, 1, sp.Rational(-1, 2)], eps=sp.Rational(1, 10**6)
    )
    assert float(o.value) == pytest.approx(float(dx[0][0]), rel=1e-15)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rms.forward_moments_match(1), "n=1"),
        (lambda: rms.backward_matches_closed_form(3, rows=0), "rows=0"),
        (lambda: rms.backward_closed_form([[1.0]], [[1.0]], eps=None), "eps=None"),
        (lambda: rms.backward_closed_form([[1.0, 2.0]], [[1.0]]), "same length"),
        (lambda: rms.backward_closed_form([[1.0]], [[1.0]], weight=[1.0, 2.0]), "len(weight)=2"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()

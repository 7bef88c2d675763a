"""theory.batchnorm: the symbolic proofs, and the formulas against torch's BatchNorm and scipy."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import sympy as sp
import torch

import theory
from theory import batchnorm as bn


@pytest.mark.parametrize("m", range(2, 7))
def test_autodiff_backward_equals_closed_form(m):
    assert bn.backward_matches_closed_form(m)


def _constant_stats_backward(x, dy, *, gamma, eps):
    """The mutant: a backward that treats the batch mean and variance as constants."""
    dx, dgamma, dbeta = bn.backward_closed_form(x, dy, gamma=gamma, eps=eps)
    m = len(x)
    mean = sum(x) / m
    var = sum((xi - mean) ** 2 for xi in x) / m
    return [gamma * d / sp.sqrt(var + eps) for d in dy], dgamma, dbeta


def _no_xhat_term_backward(x, dy, *, gamma, eps):
    """The mutant: dx without the - xhat sum(dy xhat) term (forgets the variance's dependence)."""
    m = len(x)
    mean = sum(x) / m
    inv_std = 1 / sp.sqrt(sum((xi - mean) ** 2 for xi in x) / m + eps)
    dx, dgamma, dbeta = bn.backward_closed_form(x, dy, gamma=gamma, eps=eps)
    return [gamma * inv_std / m * (m * d - sum(dy)) for d in dy], dgamma, dbeta


@pytest.mark.parametrize("mutant", [_constant_stats_backward, _no_xhat_term_backward])
@pytest.mark.parametrize("m", [2, 3, 5])
def test_proof_rejects_wrong_backward(mutant, m):
    assert not bn.backward_matches_closed_form(m, closed_form=mutant)


@pytest.mark.parametrize("m", range(2, 7))
def test_forward_output_moments(m):
    assert bn.forward_moments_match(m)


def test_closed_form_matches_torch_autograd():
    torch.manual_seed(0)
    m, gamma, beta, eps = 7, 1.7, -0.3, 1e-5
    x = (torch.randn(m, 1, dtype=torch.float64) * 3 + 5).requires_grad_()
    w = torch.tensor([gamma], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([beta], dtype=torch.float64, requires_grad=True)
    dy = torch.randn(m, 1, dtype=torch.float64)
    y = torch.nn.functional.batch_norm(x, None, None, weight=w, bias=b, training=True, eps=eps)
    y.backward(dy)
    dx, dgamma, dbeta = bn.backward_closed_form(
        x.detach()[:, 0].tolist(), dy[:, 0].tolist(), gamma=gamma, eps=eps
    )
    assert dx == pytest.approx(x.grad[:, 0].tolist(), rel=1e-12, abs=1e-13)
    assert dgamma == pytest.approx(w.grad.item(), rel=1e-12)
    assert dbeta == pytest.approx(b.grad.item(), rel=1e-12)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_expected_biased_variance_by_sympy_stats(m):
    general = bn.expected_biased_variance_expr().subs(bn.m_s, m)
    assert sp.simplify(bn.expected_biased_variance(m) - general) == 0
    assert sp.simplify(general - sp.Rational(m - 1, m) * bn.sigma2) == 0


def test_unbiased_factor():
    assert sp.simplify(bn.unbiased_factor_expr() - bn.m_s / (bn.m_s - 1)) == 0


def test_running_var_update_matches_torch():
    torch.manual_seed(1)
    m = 5
    layer = torch.nn.BatchNorm1d(1, momentum=0.1, dtype=torch.float64)
    x = torch.randn(m, 1, dtype=torch.float64) * 2 + 1
    layer(x)
    biased = x.var(unbiased=False).item()
    factor = float(bn.unbiased_factor_expr().subs(bn.m_s, m))
    assert layer.running_var.item() == pytest.approx(
        bn.running_update(1.0, biased * factor, momentum=0.1), rel=1e-14
    )
    assert layer.running_mean.item() == pytest.approx(
        bn.running_update(0.0, x.mean().item(), momentum=0.1), rel=1e-14
    )
    # The biased-variance mutant is visibly different at this m.
    assert layer.running_var.item() != pytest.approx(bn.running_update(1.0, biased), rel=1e-6)


def test_momentum_none_is_a_cumulative_average_like_torch():
    torch.manual_seed(2)
    layer = torch.nn.BatchNorm1d(1, momentum=None, dtype=torch.float64)
    running, means = 0.0, []
    for n in range(1, 5):
        x = torch.randn(6, 1, dtype=torch.float64) + n
        layer(x)
        means.append(x.mean().item())
        running = bn.running_update(running, means[-1], momentum=None, num_batches_tracked=n)
    assert layer.running_mean.item() == pytest.approx(running, rel=1e-14)
    assert running == pytest.approx(sum(means) / len(means), rel=1e-14)


@pytest.mark.parametrize("k", range(1, 6))
def test_cumulative_update_leaves_the_mean(k):
    assert bn.cumulative_average_is_mean(k)


def test_cumulative_update_is_momentum_one_over_n():
    expected = bn.running + (bn.batch - bn.running) / bn.n_s
    assert sp.simplify(bn.cumulative_update_expr() - expected) == 0


def test_keras_momentum():
    assert sp.simplify(bn.keras_momentum_expr() - (1 - bn.momentum)) == 0
    assert bn.keras_momentum(0.1) == pytest.approx(0.9)
    assert bn.keras_momentum(0.01) == pytest.approx(0.99)


def test_chi_square_moments_match_scipy():
    m = 8
    dist = scipy.stats.chi2(m - 1)
    assert theory.get("batchnorm.chi2_mean").as_float() == pytest.approx(dist.mean())
    assert theory.get("batchnorm.chi2_variance").as_float() == pytest.approx(dist.var())


@pytest.mark.parametrize("biased", [False, True])
@pytest.mark.parametrize(("m", "alpha"), [(2, 0.05), (16, 1e-6), (4096, 1e-6)])
def test_variance_confidence_interval(m, alpha, biased):
    sigma2 = 2.5
    lo, hi = bn.variance_confidence_interval(m, sigma2, alpha, biased=biased)
    to_chi2 = (
        m if biased else m - 1
    ) / sigma2  # the statistic (m-1) s^2 / sigma2 = m var_B / sigma2
    dist = scipy.stats.chi2(m - 1)
    assert dist.cdf(lo * to_chi2) == pytest.approx(alpha / 2, rel=1e-9)
    assert dist.sf(hi * to_chi2) == pytest.approx(alpha / 2, rel=1e-9)
    assert lo < sigma2 * (1 if not biased else (m - 1) / m) < hi


def test_interval_narrows_like_sqrt_2_over_m():
    lo, hi = bn.variance_confidence_interval(10**6, 1.0, 0.05)
    half_width = (hi - lo) / 2
    assert half_width == pytest.approx(1.959964 * math.sqrt(2 / (10**6 - 1)), rel=1e-2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bn.backward_matches_closed_form(1), "m=1"),
        (lambda: bn.backward_closed_form([1.0], [1.0]), "len(x)=1"),
        (lambda: bn.variance_confidence_interval(1, 1.0, 1e-6), "m=1"),
        (lambda: bn.variance_confidence_interval(8, 0.0, 1e-6), "sigma2=0.0"),
        (lambda: bn.variance_confidence_interval(8, 1.0, 0.0), "alpha=0.0"),
        (lambda: bn.running_update(0.0, 1.0, momentum=1.5), "momentum=1.5"),
        (lambda: bn.running_update(0.0, 1.0, momentum=None), "num_batches_tracked=None"),
        (lambda: bn.cumulative_average_is_mean(0), "k=0"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()

"""reference.batchnorm against its definition (moments), torch in float64, and exact arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reference import batchnorm as bn

RTOL = 1e-12


def _rows(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)


def _assert_rel(actual, expected, rtol=RTOL, what=""):
    """max |actual - expected| <= rtol * max |expected| (a norm-wise relative error)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = np.max(np.abs(actual - expected)) if actual.size else 0.0
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    assert err <= rtol * scale, f"{what}: max abs diff {err:.3e} > {rtol:g} * {scale:.3e}"


def _data(shape, *, loc=0.0, scale=1.0, seed=0):
    return np.random.default_rng(seed).normal(loc, scale, size=shape)


@pytest.mark.parametrize(
    ("shape", "loc", "scale"),
    [
        ((8, 4, 5, 5), 3.0, 2.0),
        ((2, 3), -1.0, 1e-3),
        ((16, 2, 7), 1e4, 1.0),
        ((3, 1, 2, 2, 2), 0, 5),
    ],
)
def test_output_moments(shape, loc, scale):
    """Per channel: mean(y) = beta, biased var(y) = gamma^2 var/(var+eps) (Ioffe & Szegedy 2015)."""
    x = _data(shape, loc=loc, scale=scale).astype(np.float32)  # float32 inputs, exact in float64
    c = shape[1]
    gamma = np.linspace(0.5, 2.0, c)
    beta = np.linspace(-1.0, 1.0, c)
    eps = 1e-5
    fw = bn.forward(x, gamma=gamma, beta=beta, eps=eps)
    rows = _rows(fw.y)
    m = rows.shape[1]
    mean_y = np.array([math.fsum(r) / m for r in rows])
    var_y = np.array([math.fsum((r - mu) ** 2) / m for r, mu in zip(rows, mean_y, strict=True)])
    expected_var = gamma**2 * fw.var_biased / (fw.var_biased + eps)
    np.testing.assert_allclose(mean_y, beta, rtol=0, atol=RTOL * np.max(np.abs(gamma)))
    np.testing.assert_allclose(var_y, expected_var, rtol=RTOL)


def test_constant_channel_gives_beta():
    """var = 0: eps alone decides the scale, xhat = 0 and y = beta exactly."""
    x = np.full((4, 2, 3, 3), 7.25)
    fw = bn.forward(x, beta=np.array([0.5, -2.0]))
    assert np.all(fw.var_biased == 0) and np.all(fw.var_unbiased == 0)
    assert np.all(fw.xhat == 0)
    assert np.all(fw.y[:, 0] == 0.5) and np.all(fw.y[:, 1] == -2.0)


def test_variance_exact_on_ill_conditioned_data():
    """Two-pass + fsum: the variance is a few u from the exact rational value at kappa ~ 1e6."""
    rng = np.random.default_rng(3)
    ints = rng.integers(-1000, 1000, size=(1, 1, 4000))
    x = 1e6 + ints * 2.0**-10  # exactly representable; mean/std ~ 1e6/0.56
    fw = bn.forward(x.reshape(40, 1, 100))
    vals = [Fraction(float(v)) for v in x.ravel()]
    mean = sum(vals) / len(vals)
    exact = sum((v - mean) ** 2 for v in vals) / len(vals)
    rel = abs(Fraction(float(fw.var_biased[0])) - exact) / exact
    assert rel < 8 * 2.0**-53, float(rel)
    assert float(abs(Fraction(float(fw.mean[0])) - mean) / mean) <= 2.0**-53


@pytest.mark.parametrize("shape", [(8, 4, 5, 5), (2, 3), (5, 1, 7), (3, 6, 1, 1), (2, 2, 3, 4, 2)])
def test_forward_matches_torch_float64(shape):
    x = _data(shape, loc=0.7, scale=3.0, seed=1)
    c = shape[1]
    gamma = np.linspace(-1.5, 2.0, c)
    beta = np.linspace(0.3, -0.4, c)
    eps = 1e-3
    t = lambda a: torch.from_numpy(np.asarray(a, np.float64))  # noqa: E731
    expected = F.batch_norm(t(x), None, None, t(gamma), t(beta), training=True, eps=eps).numpy()
    fw = bn.forward(x, gamma=gamma, beta=beta, eps=eps)
    _assert_rel(fw.y, expected, what="y")
    xt = t(x).transpose(0, 1).reshape(c, -1)
    _assert_rel(fw.mean, xt.mean(1).numpy(), what="mean")
    _assert_rel(fw.var_biased, xt.var(1, correction=0).numpy(), what="var_biased")
    _assert_rel(fw.var_unbiased, xt.var(1, correction=1).numpy(), what="var_unbiased")
    _assert_rel(fw.invstd, 1 / np.sqrt(xt.var(1, correction=0).numpy() + eps), what="invstd")


def test_forward_does_not_mutate_and_accepts_float32_and_torch():
    x32 = _data((4, 3, 2, 2), seed=2).astype(np.float32)
    before = x32.copy()
    fw = bn.forward(x32)
    assert fw.y.dtype == np.float64
    np.testing.assert_array_equal(x32, before)
    fw_t = bn.forward(torch.from_numpy(x32).requires_grad_())
    np.testing.assert_array_equal(fw.y, fw_t.y)


@pytest.mark.parametrize("shape", [(8, 4, 5, 5), (2, 3), (5, 1, 7), (2, 2, 3, 4, 2)])
def test_backward_matches_torch_autograd(shape):
    x = _data(shape, loc=-2.0, scale=0.5, seed=4)
    dy = _data(shape, seed=5)
    c = shape[1]
    gamma = np.linspace(0.5, 1.5, c)
    beta = np.zeros(c)
    eps = 1e-5
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.tensor(beta, requires_grad=True)
    F.batch_norm(xt, None, None, gt, bt, training=True, eps=eps).backward(torch.from_numpy(dy))
    dx, dgamma, dbeta = bn.backward(dy, x, gamma=gamma, eps=eps)
    # dx is a difference of O(m |dy|) terms: relative to the largest term, not to |dx|.
    _assert_rel(dx, xt.grad.numpy(), rtol=1e-11, what="dx")
    _assert_rel(dgamma, gt.grad.numpy(), what="dgamma")
    _assert_rel(dbeta, bt.grad.numpy(), what="dbeta")


class _ClosedFormBN(torch.autograd.Function):
    """Forward and backward both from reference.batchnorm, so gradcheck tests the closed form."""

    @staticmethod
    def forward(ctx, x, gamma, beta):
        ctx.save_for_backward(x, gamma)
        y = bn.forward(x.numpy(), gamma=gamma.numpy(), beta=beta.numpy(), eps=1e-3).y
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, dy):
        x, gamma = ctx.saved_tensors
        dx, dgamma, dbeta = bn.backward(dy.numpy(), x.numpy(), gamma=gamma.numpy(), eps=1e-3)
        return torch.from_numpy(dx), torch.from_numpy(dgamma), torch.from_numpy(dbeta)


@pytest.mark.parametrize("shape", [(3, 2, 2, 2), (2, 1), (4, 3)])
def test_backward_passes_gradcheck(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(shape[1], generator=g, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(shape[1], generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_ClosedFormBN.apply, (x, gamma, beta), eps=1e-6, atol=1e-8)


def test_backward_is_not_the_constant_statistics_gradient():
    """The mean/var terms matter: dropping them (a known bug) changes dx far beyond tolerance."""
    x, dy = _data((6, 2, 3), seed=6), _data((6, 2, 3), seed=7)
    dx, _, _ = bn.backward(dy, x)
    wrong = dy * bn.forward(x).invstd[None, :, None]
    assert np.max(np.abs(dx - wrong)) > 1e-2


def test_eval_forward_matches_torch():
    x = _data((5, 3, 4, 4), loc=1.0, seed=8)
    rm, rv = np.array([0.5, -1.0, 2.0]), np.array([0.25, 1.0, 4.0])
    gamma, beta = np.array([1.0, 2.0, -0.5]), np.array([0.0, 0.1, 0.2])
    t = torch.from_numpy
    expected = F.batch_norm(t(x), t(rm), t(rv), t(gamma), t(beta), training=False, eps=1e-4)
    y = bn.eval_forward(x, rm, rv, gamma=gamma, beta=beta, eps=1e-4)
    _assert_rel(y, expected.numpy(), what="eval y")
    # m = 1 is fine in eval mode
    assert bn.eval_forward(x[:1, :, :1, :1], rm, rv).shape == (1, 3, 1, 1)


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_running_stats_match_batchnorm2d(momentum):
    torch.manual_seed(0)
    mod = torch.nn.BatchNorm2d(3, momentum=momentum, dtype=torch.float64).train()
    rm, rv, nbt = np.zeros(3), np.ones(3), 0
    for step in range(6):
        x = _data((4, 3, 3, 5), loc=step - 2.0, scale=1.0 + step, seed=10 + step)
        mod(torch.from_numpy(x))
        fw = bn.forward(x)
        rm, rv, nbt = bn.update_running(
            rm, rv, fw.mean, fw.var_unbiased, momentum=momentum, num_batches_tracked=nbt
        )
    _assert_rel(rm, mod.running_mean.numpy(), what="running_mean")
    _assert_rel(rv, mod.running_var.numpy(), what="running_var")
    assert nbt == int(mod.num_batches_tracked) == 6


def test_momentum_none_is_cumulative_average():
    means = [np.array([1.0, 2.0]), np.array([3.0, -2.0]), np.array([5.0, 0.0])]
    rm, rv, nbt = np.zeros(2), np.ones(2), 0
    for mu in means:
        rm, rv, nbt = bn.update_running(rm, rv, mu, mu**2, momentum=None, num_batches_tracked=nbt)
    np.testing.assert_allclose(rm, np.mean(means, axis=0), rtol=1e-15)
    np.testing.assert_allclose(rv, np.mean([mu**2 for mu in means], axis=0), rtol=1e-15)


@pytest.mark.parametrize("keras_momentum", [0.99, 0.9, 0.5, 0.0, 1.0])
def test_keras_convention_is_torch_with_one_minus_momentum(keras_momentum):
    args = (np.array([0.3, -1.0]), np.array([2.0, 0.5]), np.array([1.0, 4.0]), np.array([3, 7.0]))
    k = bn.update_running(*args, momentum=keras_momentum, convention="keras")
    t = bn.update_running(*args, momentum=1 - keras_momentum, convention="torch")
    np.testing.assert_array_equal(k.mean, t.mean)
    np.testing.assert_array_equal(k.var, t.var)
    if keras_momentum not in (0.5,):
        # the two conventions differ: reading one as the other is a bug the suite must see
        other = bn.update_running(*args, momentum=keras_momentum, convention="torch")
        assert not np.array_equal(k.mean, other.mean)


def test_m1_in_training_raises_like_torch():
    x = np.ones((1, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.functional.batch_norm(torch.ones(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match=r"m = N\*prod\(spatial\) = 1.*more than 1 value"):
        bn.forward(x)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn.backward(x, x)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: bn.forward(np.ones(5)), "rank >= 2"),
        (lambda: bn.forward(np.ones((4, 3)), gamma=np.ones(2)), r"gamma .*shape \(3,\)"),
        (lambda: bn.forward(np.ones((4, 3)), beta=np.ones(4)), "beta"),
        (lambda: bn.forward(np.ones((4, 3)), eps=-1.0), "eps must be >= 0"),
        (lambda: bn.forward(np.ones((4, 3), complex)), "real"),
        (lambda: bn.backward(np.ones((4, 2)), np.ones((4, 3))), "dy must have the shape"),
        (lambda: bn.eval_forward(np.ones((4, 3)), np.ones(3), -np.ones(3)), "running_var"),
        (lambda: bn.update_running(1, 1, 1, 1, momentum=1.5), "momentum must lie in"),
        (lambda: bn.update_running(1, 1, 1, 1, momentum=0.1, convention="tf"), "convention"),
        (lambda: bn.update_running(1, 1, 1, 1, momentum=None, convention="keras"), "None"),
        (lambda: bn.update_running(1, 1, 1, 1, momentum=0.1, num_batches_tracked=-1), ">= 0"),
    ],
)
def test_bad_input_raises_clear_errors(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()

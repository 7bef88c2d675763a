"""reference.init_laws against torch.nn.init: gains, fans, bounds and the sampled distributions."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from reference import init_laws as il

ALPHA = 1e-6  # false-alarm rate of each statistical test: a correct sampler never fails by chance
SHAPE = (200, 50, 10)  # 100,000 samples; fan_in = 500, fan_out = 2000 (unequal, so swaps show)


def test_fans_follow_torch_convention():
    assert il.fans((30, 20)) == (20, 30)  # Linear weight is (out, in)
    assert il.fans((64, 3, 7, 7)) == (3 * 49, 64 * 49)
    assert il.fans((8, 4, 3)) == (12, 24)


@pytest.mark.parametrize(
    ("nonlinearity", "param"),
    [
        ("linear", None),
        ("conv2d", None),
        ("conv_transpose3d", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("selu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0),
        ("leaky_relu", 0.2),
        ("leaky_relu", 1),
        ("leaky_relu", math.sqrt(5)),
    ],
)
def test_gains_match_torch(nonlinearity, param):
    expected = torch.nn.init.calculate_gain(nonlinearity, param)
    assert il.calculate_gain(nonlinearity, param) == pytest.approx(expected, rel=1e-15)


def test_relu_gain_is_one_over_root_second_moment():
    """He et al. 2015: gain^2 = 1/E[relu(z)^2] with z ~ N(0, 1), and E[relu(z)^2] = 1/2."""
    second_moment = stats.norm.expect(lambda z: max(z, 0.0) ** 2, lb=-40, ub=40)
    assert il.calculate_gain("relu") == pytest.approx(1 / math.sqrt(second_moment), rel=1e-9)


# torch's own arithmetic for each law's scale (torch/nn/init.py), to compare with ours.
def _torch_xavier_std(shape, gain):
    fan_in, fan_out = il.fans(shape)
    return gain * math.sqrt(2.0 / float(fan_in + fan_out))


def _torch_kaiming_std(shape, a, mode, nonlinearity):
    fan = il.fans(shape)[0 if mode == "fan_in" else 1]
    return torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan)


@pytest.mark.parametrize(("shape", "gain"), [((30, 20), 1.0), ((64, 3, 7, 7), 5 / 3), (SHAPE, 2.0)])
def test_xavier_uniform_bound_equals_torchs(shape, gain):
    law = il.xavier_uniform(shape, gain)
    bound = math.sqrt(3.0) * _torch_xavier_std(shape, gain)
    lo, hi = law.support()
    assert hi == pytest.approx(bound, rel=4e-16) and lo == -hi
    assert law.var() == pytest.approx(gain**2 * 2 / sum(il.fans(shape)), rel=1e-14)
    torch.manual_seed(0)
    w = torch.nn.init.xavier_uniform_(torch.empty(shape, dtype=torch.float64), gain=gain)
    assert w.abs().max().item() <= hi


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize(
    ("a", "nonlinearity"), [(0, "leaky_relu"), (0.2, "leaky_relu"), (0, "relu")]
)
def test_kaiming_bounds_equal_torchs(mode, a, nonlinearity):
    shape = (64, 3, 7, 7)
    std = _torch_kaiming_std(shape, a, mode, nonlinearity)
    lo, hi = il.kaiming_uniform(shape, a, mode, nonlinearity).support()
    assert hi == pytest.approx(math.sqrt(3.0) * std, rel=4e-16) and lo == -hi
    assert il.kaiming_normal(shape, a, mode, nonlinearity).std() == pytest.approx(std, rel=4e-16)


def _torch_samples(fill, **kw):
    torch.manual_seed(1234)
    w = torch.empty(SHAPE, dtype=torch.float64)
    fill(w, **kw)
    return w.flatten().numpy()


@pytest.mark.parametrize(
    ("fill", "law", "kw"),
    [
        (torch.nn.init.xavier_uniform_, il.xavier_uniform, {"gain": 1.0}),
        (torch.nn.init.xavier_normal_, il.xavier_normal, {"gain": 5 / 3}),
        (torch.nn.init.kaiming_uniform_, il.kaiming_uniform, {"a": 0.2, "mode": "fan_in"}),
        (torch.nn.init.kaiming_normal_, il.kaiming_normal, {"mode": "fan_out"}),
        (
            torch.nn.init.kaiming_normal_,
            il.kaiming_normal,
            {"mode": "fan_in", "nonlinearity": "relu"},
        ),
    ],
)
def test_torch_samples_follow_the_law(fill, law, kw):
    """Kolmogorov-Smirnov of 100k torch samples against the law: not rejected at alpha = 1e-6."""
    samples = _torch_samples(fill, **kw)
    result = stats.kstest(samples, law(SHAPE, **kw).cdf)
    assert result.pvalue > ALPHA, result


@pytest.mark.parametrize(
    ("fill", "wrong_law"),
    [
        # Xavier with sqrt(3/...) instead of sqrt(6/...): a known bug
        (
            torch.nn.init.xavier_uniform_,
            stats.uniform(-math.sqrt(3 / 2500), 2 * math.sqrt(3 / 2500)),
        ),
        # Kaiming with the fans swapped (fan_out for fan_in)
        (torch.nn.init.kaiming_normal_, il.kaiming_normal(SHAPE, mode="fan_out")),
    ],
)
def test_ks_rejects_a_wrong_law(fill, wrong_law):
    """The same test has the power to see a real mistake: it is not a test that always passes."""
    assert stats.kstest(_torch_samples(fill), wrong_law.cdf).pvalue < ALPHA


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: il.fans((5,)), "at least 2 dimensions"),
        (lambda: il.fans((0, 3)), "positive sizes"),
        (lambda: il.xavier_uniform((3, 4), gain=0.0), "gain must be > 0"),
        (lambda: il.kaiming_uniform((3, 4), mode="fan_avg"), "mode must be 'fan_in'"),
        (lambda: il.kaiming_normal((3, 4), nonlinearity="gelu"), "nonlinearity='gelu'"),
        (lambda: il.calculate_gain("leaky_relu", True), "negative slope"),
    ],
)
def test_bad_input_raises_clear_errors(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()

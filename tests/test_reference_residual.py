"""reference.residual: layout (torchvision v1.5), forward by hand, pluggable parts, zero-init."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reference.residual import BasicBlock, Bottleneck, drop_path


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _bn(x, mod):
    return F.batch_norm(x, None, None, mod.weight, mod.bias, training=True, eps=mod.eps)


def test_bottleneck_v15_layout():
    block = Bottleneck(256, 128, stride=2)
    assert block.out_channels == 512
    assert block.conv1.stride == (1, 1) and block.conv1.kernel_size == (1, 1)
    assert block.conv2.stride == (2, 2) and block.conv2.kernel_size == (3, 3)  # v1.5
    assert block.conv3.out_channels == 512
    conv, norm = block.downsample
    assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and isinstance(norm, nn.BatchNorm2d)
    assert all(p.dtype == torch.float64 for p in block.parameters())
    assert Bottleneck(256, 64).downsample is None  # same shape: identity shortcut
    assert Bottleneck(64, 64).downsample is not None  # channels change 64 -> 256


def test_basic_block_layout():
    assert BasicBlock(64, 64).downsample is None
    block = BasicBlock(64, 128, stride=2)
    assert block.conv1.stride == (2, 2) and block.downsample is not None
    assert block(_x(2, 64, 8, 8)).shape == (2, 128, 4, 4)


def test_bottleneck_forward_by_hand():
    """out = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1 x))))))) + bn(conv1x1(x)))."""
    block = Bottleneck(32, 16, stride=2).train()
    x = _x(3, 32, 9, 9)
    h = F.relu(_bn(F.conv2d(x, block.conv1.weight), block.bn1))
    h = F.relu(_bn(F.conv2d(h, block.conv2.weight, stride=2, padding=1), block.bn2))
    h = _bn(F.conv2d(h, block.conv3.weight), block.bn3)
    conv, norm = block.downsample
    shortcut = _bn(F.conv2d(x, conv.weight, stride=2), norm)
    expected = F.relu(h + shortcut)
    torch.testing.assert_close(block(x), expected, rtol=1e-13, atol=1e-13)


def test_basic_block_forward_by_hand():
    block = BasicBlock(8, 8).train()
    x = _x(2, 8, 5, 5)
    h = F.relu(_bn(F.conv2d(x, block.conv1.weight, padding=1), block.bn1))
    h = _bn(F.conv2d(h, block.conv2.weight, padding=1), block.bn2)
    torch.testing.assert_close(block(x), F.relu(h + x), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("cls", [BasicBlock, Bottleneck])
@pytest.mark.parametrize("skip", [True, False])
def test_residual_add_is_called_once_per_forward_with_skip_only(cls, skip):
    calls = []

    def counting_add(out, identity):
        calls.append((out.shape, identity.shape))
        return out + identity

    block = cls(16, 16, stride=2, residual_add=counting_add, skip=skip)
    block(_x(2, 16, 6, 6))
    assert len(calls) == (1 if skip else 0)
    assert (block.downsample is None) == (not skip)  # a plain block has no projection either


@pytest.mark.parametrize("cls", [BasicBlock, Bottleneck])
@pytest.mark.parametrize(("in_ch", "planes", "stride"), [(16, 16, 1), (16, 8, 2), (64, 16, 1)])
def test_zero_init_last_gamma_gives_relu_of_shortcut(cls, in_ch, planes, stride):
    block = cls(in_ch, planes, stride=stride, zero_init_last_gamma=True)
    assert torch.all(block.last_norm.weight == 0)
    x = _x(2, in_ch, 6, 6)
    for mode in (block.train, block.eval):
        mode()
        torch.testing.assert_close(block(x), F.relu(block.shortcut(x)), rtol=0, atol=0)


def test_pluggable_norm_and_activation_are_used():
    made = []

    def group_norm(channels):
        made.append(channels)
        return nn.GroupNorm(2, channels)

    block = Bottleneck(8, 4, norm_layer=group_norm, activation=nn.Tanh)
    assert made == [4, 4, 16, 16]  # bn1, bn2, bn3, downsample norm
    assert isinstance(block.act_out, nn.Tanh) and isinstance(block.act1, nn.Tanh)
    out = block(_x(2, 8, 4, 4))
    assert out.min() > -1 and out.max() < 1  # the last activation is tanh, not relu


def test_zero_init_needs_an_affine_norm():
    with pytest.raises(ValueError, match="'weight'"):
        BasicBlock(4, 4, norm_layer=lambda c: nn.Identity(), zero_init_last_gamma=True)


def test_stochastic_depth_drops_whole_samples_in_training_and_is_identity_in_eval():
    torch.manual_seed(0)
    block = BasicBlock(8, 8, drop_path=0.5)
    x = _x(64, 8, 4, 4)
    branch = block.branch(x)
    torch.manual_seed(1)
    out = block.train()(x)
    dropped = torch.tensor([torch.equal(o, F.relu(xi)) for o, xi in zip(out, x, strict=True)])
    kept = torch.tensor(
        [torch.allclose(o, F.relu(2 * b + xi)) for o, b, xi in zip(out, branch, x, strict=True)]
    )
    assert torch.all(dropped ^ kept)  # each sample is either fully dropped or fully kept
    assert 10 < int(dropped.sum()) < 54  # Bernoulli(0.5) over 64 samples, far from the tails
    plain_eval = BasicBlock(8, 8)
    plain_eval.load_state_dict(block.state_dict())
    torch.testing.assert_close(block.eval()(x), plain_eval.eval()(x), rtol=0, atol=0)
    assert drop_path(x, 0.5, training=False) is x


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: BasicBlock(0, 4), "in_channels must be a positive integer"),
        (lambda: Bottleneck(4, 4, stride=0), "stride"),
        (lambda: BasicBlock(4, 4, drop_path=1.0), r"drop_path must lie in \[0, 1\)"),
        (lambda: BasicBlock(4, 4, drop_path=0.1, skip=False), "needs the shortcut"),
    ],
)
def test_bad_arguments_raise(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_float32_on_request():
    block = functools.partial(Bottleneck, dtype=torch.float32)(8, 2)
    assert all(p.dtype == torch.float32 for p in block.parameters())

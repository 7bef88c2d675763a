"""reference.resnet: torchvision's ResNet-50 v1.5 (count, names, init), plain-50, zero-init."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reference import resnet as rn


@pytest.fixture(scope="module")
def r50():
    torch.manual_seed(0)
    return rn.resnet50()


def test_resnet50_has_torchvisions_parameter_count(r50):
    assert rn.count_parameters(r50) == 25_557_032
    assert len(list(r50.blocks())) == 16
    # torchvision's state-dict names, so its checkpoints line up (161 parameters + 159 buffers)
    keys = r50.state_dict().keys()
    assert len(keys) == 320
    for name in (
        "conv1.weight",
        "layer1.0.downsample.0.weight",
        "layer4.2.bn3.running_var",
        "fc.bias",
    ):
        assert name in keys


def test_resnet50_forward_shape_and_dtype(r50):
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    out = r50.eval()(x)
    assert out.shape == (2, 1000) and out.dtype == torch.float64
    assert torch.isfinite(out).all()


def test_default_stem_is_torchvisions_and_small_input_is_not(r50):
    assert r50.conv1.kernel_size == (7, 7) and r50.conv1.stride == (2, 2)
    assert isinstance(r50.maxpool, nn.MaxPool2d)
    assert r50.layer2[0].conv2.stride == (2, 2) and r50.layer2[0].conv1.stride == (1, 1)  # v1.5
    small = rn.resnet50(small_input=True, num_classes=10)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    assert rn.count_parameters(small) == 25_557_032 - 1000 * 2049 + 10 * 2049 - 64 * 3 * (49 - 9)
    seen = []
    small.layer4.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert small(torch.randn(2, 3, 32, 32, dtype=torch.float64)).shape == (2, 10)
    assert seen == [(2, 2048, 4, 4)]  # 32 / 8: only the three stride-2 stages downsample


def test_kaiming_fan_out_init_like_torchvision(r50):
    w = r50.layer4[0].conv2.weight  # (512, 512, 3, 3): 2.4M samples, std error ~ 5e-4 relative
    expected_std = (2 / (512 * 9)) ** 0.5  # kaiming_normal_, mode fan_out, relu
    assert w.std().item() == pytest.approx(expected_std, rel=5e-3)
    assert all(torch.all(b.bn3.weight == 1) for b in r50.blocks())  # no zero-init by default


def test_other_depths():
    assert rn.count_parameters(rn.resnet18()) == 11_689_512
    assert rn.count_parameters(rn.resnet34(dtype=torch.float32)) == 21_797_672


def _counting_add():
    calls = []

    def add(out, identity):
        calls.append(1)
        return out + identity

    return add, calls


def test_plain50_has_no_identity_adds():
    add, calls = _counting_add()
    plain = rn.plain50(num_classes=10, residual_add=add, dtype=torch.float32)
    plain(torch.randn(2, 3, 32, 32))
    assert len(calls) == 0
    assert all(b.downsample is None for b in plain.blocks())
    add, calls = _counting_add()
    rn.resnet50(num_classes=10, residual_add=add, dtype=torch.float32)(torch.randn(2, 3, 32, 32))
    assert len(calls) == 16  # the same hook does see every add of the residual network


def test_zero_init_residual_blocks_start_as_relu_of_shortcut():
    torch.manual_seed(0)
    model = rn.resnet50(num_classes=10, zero_init_residual=True)
    assert all(torch.all(b.bn3.weight == 0) for b in model.blocks())
    mismatches = []

    def check(block, inputs, output):
        if not torch.equal(output, F.relu(block.shortcut(inputs[0]))):
            mismatches.append(block)

    handles = [b.register_forward_hook(check) for b in model.blocks()]
    model(torch.randn(4, 3, 32, 32, dtype=torch.float64))
    for h in handles:
        h.remove()
    assert mismatches == []


def test_pluggable_parts_reach_every_layer():
    norms = []

    def norm(c):
        norms.append(c)
        return nn.BatchNorm2d(c)

    model = rn.resnet50(norm_layer=norm, activation=nn.SiLU, dtype=torch.float32)
    assert len(norms) == 53  # stem + 3 per block + 4 downsample projections
    assert isinstance(model.act1, nn.SiLU) and isinstance(model.layer3[2].act_out, nn.SiLU)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"layers": (3, 4, 6)}, "4 positive block counts"),
        ({"block": "wide"}, "block must be one of"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"stochastic_depth": 1.0}, "stochastic_depth must lie in"),
        ({"skip": False, "zero_init_residual": True}, "needs the shortcuts"),
    ],
)
def test_bad_config_raises(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        rn.ResNetConfig(**kw)


def test_plain50_refuses_skip():
    with pytest.raises(ValueError, match="plain50"):
        rn.plain50(skip=True)

"""Residual-block mutants: the float32 in-place-ReLU blocks of verify/targets/residual.py with one
real, known bug each. Each is a drop-in block (same constructor, same state dict) so the same
adapter runs it; the correct blocks pass every check, so a failure is the bug's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reference.residual import BasicBlock, Bottleneck, conv1x1, conv3x3
from verify.mutants.base import Mutants
from verify.targets.residual import DROP_PATH_P, inplace_relu

MUTANTS = Mutants("residual", prefix="res_")


class _Basic(BasicBlock):
    def __init__(
        self, in_channels: int, planes: int, stride: int = 1, *, drop_path: float = 0.0
    ) -> None:
        super().__init__(
            in_channels,
            planes,
            stride=stride,
            activation=inplace_relu,
            drop_path=drop_path,
            dtype=torch.float32,
        )


@MUTANTS.register(
    name="add_after_relu",
    bug="shortcut added after the final ReLU: relu(F(x)) + x",
    caught_by=("residual.forward", "residual.identity_gradient", "residual.variance_depth"),
    options={"block": "basic"},
)
class AddAfterRelu(_Basic):
    """relu(F(x)) + x instead of relu(F(x) + x): the shortcut joins after the final ReLU."""

    def forward(self, x):
        return self.act_out(self.branch(x)) + self.shortcut(x)


@MUTANTS.register(
    name="shortcut_add_in_place",
    bug="identity += out: the residual add writes into the block's input",
    caught_by=("residual.no_mutation",),
    options={"block": "basic"},
)
class ShortcutAddInPlace(_Basic):
    """torchvision's ``out += identity`` written ``identity += out``: with an identity shortcut
    the sum lands in the caller's tensor."""

    def forward(self, x):
        out = self.branch(x)
        identity = self.shortcut(x)
        identity += out
        return self.act_out(identity)


@MUTANTS.register(
    name="drop_path_unscaled",
    bug="drop-path without the 1/(1-p) rescaling",
    caught_by=("residual.stochastic_depth", "residual.forward"),
    options={"block": "basic", "drop_path": DROP_PATH_P},
)
class DropPathUnscaled(_Basic):
    """Stochastic depth that drops the branch but forgets to rescale the kept ones by 1/(1-p):
    E[output] shrinks in training and no longer matches eval."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__(in_channels, planes, stride, drop_path=DROP_PATH_P)

    def forward(self, x):
        out = self.branch(x)
        if self.training:
            keep = 1.0 - self.drop_prob
            mask = torch.empty((out.shape[0], 1, 1, 1), dtype=out.dtype, device=out.device)
            out = out * mask.bernoulli_(keep)
        return self.act_out(out + self.shortcut(x))


@MUTANTS.register(
    name="downsample_without_bn",
    bug="projection shortcut missing its BN",
    caught_by=("residual.forward",),
    options={"block": "basic"},
)
class DownsampleWithoutBN(_Basic):
    """Projection shortcut that applies its 1x1 conv but skips its batch norm."""

    def shortcut(self, x):
        return x if self.downsample is None else self.downsample[0](x)


@MUTANTS.register(
    name="legacy_data_shortcut",
    bug="identity = x.data: no gradient through the shortcut",
    caught_by=("residual.identity_gradient", "residual.plain_vs_residual"),
    options={"block": "basic"},
)
class LegacyDataShortcut(_Basic):
    """``identity = x.data``, a pre-0.4 PyTorch idiom: the shortcut bypasses autograd, so no
    gradient flows through the identity path (forward values are right)."""

    def shortcut(self, x):
        return x.data if self.downsample is None else self.downsample(x)


@MUTANTS.register(
    name="bottleneck_stride_in_1x1",
    bug="v1 stride placement (first 1x1 conv) in a v1.5 bottleneck",
    caught_by=("residual.forward",),
    options={"block": "bottleneck"},
)
class BottleneckStrideIn1x1(Bottleneck):
    """ResNet v1 stride placement (stride in the first 1x1 conv, which skips three quarters of
    the input) in a block meant to be torchvision's v1.5 (stride in the 3x3): same weights,
    same output shape, different function."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__(
            in_channels, planes, stride=stride, activation=inplace_relu, dtype=torch.float32
        )

    def _build_branch(self) -> None:
        self.conv1 = conv1x1(self.in_channels, self.planes, self.stride)
        self.bn1 = self.norm_layer(self.planes)
        self.act1 = self.activation()
        self.conv2 = conv3x3(self.planes, self.planes)
        self.bn2 = self.norm_layer(self.planes)
        self.act2 = self.activation()
        self.conv3 = conv1x1(self.planes, self.out_channels)
        self.bn3 = self.norm_layer(self.out_channels)


def _tf32(t: torch.Tensor) -> torch.Tensor:
    """Round float32 to TF32's 10-bit mantissa (round to nearest on the bits dropped), as tensor
    cores read their inputs."""
    bits = t.detach().contiguous().view(torch.int32)
    rounded = ((bits + (1 << 12)) & ~((1 << 13) - 1)).view(torch.float32)
    # Integer bit tricks carry no gradient: pass it straight through, as a TF32 conv's does.
    return t + (rounded - t).detach()


@MUTANTS.register(
    name="conv_tf32",
    bug="branch convolutions on TF32 inputs (cuDNN's allow_tf32 default on Ampere+)",
    caught_by=("residual.forward",),
    options={"block": "basic"},
)
class ConvTF32(_Basic):
    """Branch convolutions on TF32 inputs (accumulated in float32): what cuDNN does on Ampere and
    later GPUs while ``torch.backends.cudnn.allow_tf32`` is on, its default. A precision choice
    made silently: 4.9e-4 relative per input instead of float32's 6e-8."""

    def _build_branch(self) -> None:
        super()._build_branch()
        for conv in (self.conv1, self.conv2):
            conv.forward = _tf32_conv(conv)


def _tf32_conv(conv: nn.Conv2d):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(_tf32(x), _tf32(conv.weight), conv.bias, conv.stride, conv.padding)

    return forward

"""A residual block whose tail is the fused Triton kernel: ``relu(bn2(conv2(.)) + shortcut(x))``.

The convolutions are torch's; every batch norm is :class:`TritonBatchNorm2d`, and the block's
last three steps (bn2, the shortcut add and the ReLU) are one kernel on the way forward and two
on the way back (:meth:`TritonBatchNorm2d.forward_add_relu`). Parameter names are torchvision's,
so the float64 reference block of :mod:`reference.residual` hands it its weights.
"""

from __future__ import annotations

import torch
from torch import nn

from reference.residual import BasicBlock
from verify.kernels.batchnorm import TritonBatchNorm2d


def _inplace_relu() -> nn.Module:
    return nn.ReLU(inplace=True)


class FusedTailBasicBlock(BasicBlock):
    """BasicBlock (two 3x3 convs) with Triton batch norms and a fused BN + add + ReLU tail."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__(
            in_channels,
            planes,
            stride=stride,
            norm_layer=TritonBatchNorm2d,
            activation=_inplace_relu,
            dtype=torch.float32,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        return self.bn2.forward_add_relu(self.conv2(out), self.shortcut(x))


__all__ = ["FusedTailBasicBlock"]

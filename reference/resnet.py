"""The reference ResNet-50: torchvision's v1.5 layout, one config dataclass, one model.

Sources: He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image Recognition", Table 1;
torchvision.models.resnet (v1.5: stride in the Bottleneck's 3x3 conv; init: kaiming_normal_
fan_out/relu for convs, BN gamma 1 and beta 0, ``zero_init_residual``). With 1000 classes and the
default layout ResNet-50 has exactly 25,557,032 parameters, as torchvision's.

The norm layer, activation and residual add are pluggable (see :mod:`reference.residual`), so an
implementation under test runs inside the full 50-layer network; ``skip=False`` gives "plain-50"
(He et al. 2016, Section 4.1), the degradation control; ``small_input=True`` replaces the ImageNet
stem (7x7 stride-2 conv + max-pool) by a 3x3 stride-1 conv for 32x32 images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from reference.residual import (
    Activation,
    BasicBlock,
    Bottleneck,
    NormLayer,
    ResidualAdd,
    ResidualBlock,
    conv3x3,
)

__all__ = [
    "ResNet",
    "ResNetConfig",
    "count_parameters",
    "plain50",
    "resnet18",
    "resnet34",
    "resnet50",
]

_BLOCKS: dict[str, type[ResidualBlock]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


@dataclass
class ResNetConfig:
    """Everything that defines a reference ResNet. The defaults are torchvision's ResNet-50."""

    block: str = "bottleneck"  # "basic" for ResNet-18/34
    layers: tuple[int, ...] = (3, 4, 6, 3)  # blocks per stage; the stages have 64..512 planes
    num_classes: int = 1000
    in_channels: int = 3
    small_input: bool = False  # 3x3 stride-1 stem and no max-pool, for 32x32 images
    skip: bool = True  # False: the plain network (no shortcuts at all)
    zero_init_residual: bool = False  # each branch's last norm gamma = 0 at init
    stochastic_depth: float = 0.0  # drop-path probability of the last block, linear in depth
    norm_layer: NormLayer | None = None  # default nn.BatchNorm2d
    activation: Activation | None = None  # default nn.ReLU
    residual_add: ResidualAdd | None = None  # default out + identity
    dtype: torch.dtype = torch.float64

    def __post_init__(self) -> None:
        if self.block not in _BLOCKS:
            raise ValueError(f"block must be one of {sorted(_BLOCKS)}, got block={self.block!r}")
        self.layers = tuple(self.layers)
        if len(self.layers) != 4 or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.layers
        ):
            raise ValueError(
                f"layers must be 4 positive block counts (one per stage), got "
                f"layers={self.layers!r}; ResNet-50 is (3, 4, 6, 3)"
            )
        for name in ("num_classes", "in_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
        if not 0.0 <= self.stochastic_depth < 1.0:
            raise ValueError(
                f"stochastic_depth must lie in [0, 1), got {self.stochastic_depth!r}; it is "
                f"the last block's drop-path probability"
            )
        if self.stochastic_depth > 0.0 and not self.skip:
            raise ValueError(
                "stochastic_depth > 0 needs the shortcuts; use stochastic_depth=0.0 with skip=False"
            )
        if self.zero_init_residual and not self.skip:
            # Without a shortcut a zeroed branch zeroes the whole signal: a dead network.
            raise ValueError(
                "zero_init_residual=True needs the shortcuts (skip=True); a plain network with "
                "zeroed last gammas outputs a constant. Use zero_init_residual=False"
            )


class ResNet(nn.Module):
    """Stem, four stages of residual blocks, global average pool, linear classifier."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        norm_layer = config.norm_layer if config.norm_layer is not None else nn.BatchNorm2d
        activation = config.activation if config.activation is not None else nn.ReLU
        block_cls = _BLOCKS[config.block]

        # Stem: ImageNet's 7x7/2 conv + 3x3/2 max-pool divide the resolution by 4 before the
        # first block; on 32x32 images that leaves too little, hence the small-input variant.
        if config.small_input:
            self.conv1 = conv3x3(config.in_channels, 64)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(config.in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = norm_layer(64)
        self.act1 = activation()

        # Four stages; the first block of stages 2-4 halves the resolution (stride 2).
        total = sum(config.layers)
        index = 0
        in_channels = 64
        for stage, (planes, count) in enumerate(
            zip((64, 128, 256, 512), config.layers, strict=True), 1
        ):
            blocks = []
            for i in range(count):
                index += 1
                blocks.append(
                    block_cls(
                        in_channels,
                        planes,
                        stride=2 if (i == 0 and stage > 1) else 1,
                        norm_layer=norm_layer,
                        activation=activation,
                        residual_add=config.residual_add,
                        skip=config.skip,
                        # Huang et al. 2016's linear decay rule: deeper blocks drop more often.
                        drop_path=config.stochastic_depth * index / total,
                        dtype=None,  # the whole model is converted once below
                    )
                )
                in_channels = planes * block_cls.expansion
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_channels, config.num_classes)

        # Convert first, then initialise, so float64 weights are float64 samples.
        self.to(config.dtype)
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's init; the Linear layer keeps PyTorch's default (as torchvision's)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init last: the loop above has just set every BN gamma to 1 (Goyal et al. 2017).
        if self.config.zero_init_residual:
            for block in self.blocks():
                block.zero_init_last_gamma_()

    def blocks(self) -> Iterator[ResidualBlock]:
        """The residual blocks in forward order (16 in ResNet-50)."""
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            yield from stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter entries (not buffers): 25,557,032 for ResNet-50 with 1000 classes."""
    return sum(p.numel() for p in model.parameters())


def resnet50(**kw) -> ResNet:
    """ResNet-50 v1.5 (Bottleneck, [3, 4, 6, 3]); ``kw`` are :class:`ResNetConfig` fields."""
    return ResNet(ResNetConfig(**kw))


def plain50(**kw) -> ResNet:
    """ResNet-50 without shortcuts ("plain-50", He et al. 2016): the degradation control."""
    if kw.get("skip", False):
        raise ValueError("plain50 is the network without shortcuts; use resnet50 for skip=True")
    return ResNet(ResNetConfig(**{**kw, "skip": False}))


def resnet18(**kw) -> ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]): 11,689,512 parameters with 1000 classes."""
    return ResNet(ResNetConfig(**{"block": "basic", "layers": (2, 2, 2, 2), **kw}))


def resnet34(**kw) -> ResNet:
    """ResNet-34 (BasicBlock, [3, 4, 6, 3]): 21,797,672 parameters with 1000 classes."""
    return ResNet(ResNetConfig(**{"block": "basic", "layers": (3, 4, 6, 3), **kw}))

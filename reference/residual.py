"""Residual blocks, readable, float64 by default, with pluggable parts.

Sources: He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image Recognition" (BasicBlock,
Bottleneck, projection shortcut "option B"); torchvision.models.resnet (v1.5 layout: the
Bottleneck's stride sits in its 3x3 conv, not its first 1x1); Huang et al. 2016, "Deep Networks
with Stochastic Depth" (drop-path, here in torchvision's "row" mode: scaled by 1/(1-p) in training,
identity in eval); Goyal et al. 2017 (zero-init of each branch's last BN gamma).

Pluggable parts, so that an implementation under test runs inside a real block:

- ``norm_layer``: ``callable(num_channels) -> nn.Module`` (default ``nn.BatchNorm2d``);
- ``activation``: ``callable() -> nn.Module`` (default ``nn.ReLU``, not in-place: a reference
  never overwrites a tensor a caller may still hold);
- ``residual_add``: ``callable(out, identity) -> Tensor`` (default ``out + identity``);
- ``skip=False`` removes the shortcut (the "plain" network of He et al. 2016, Section 4.1).

Parameter and buffer names follow torchvision (``conv1``, ``bn1``, ..., ``downsample.0``,
``downsample.1``) so state dicts line up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResidualBlock", "add", "conv1x1", "conv3x3", "drop_path"]

NormLayer = Callable[[int], nn.Module]
Activation = Callable[[], nn.Module]
ResidualAdd = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def add(out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """The default residual add: ``out + identity`` (a new tensor; neither input is touched)."""
    return out + identity


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (the following norm layer has one)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth on a residual branch: drop whole samples with probability ``p``.

    In training each sample's branch is kept with probability ``1 - p`` and scaled by
    ``1/(1 - p)`` so its expectation is unchanged; in eval it is the identity (torchvision's
    ``stochastic_depth(mode="row")``).
    """
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
    return x * mask.bernoulli_(keep) / keep


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    return value


class ResidualBlock(nn.Module):
    """What BasicBlock and Bottleneck share: the shortcut, drop-path, the add and the last act.

    ``forward(x) = act_out(residual_add(drop_path(branch(x)), shortcut(x)))``, or
    ``act_out(branch(x))`` with ``skip=False``. Subclasses build the branch and define
    :meth:`branch` and :attr:`last_norm`.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        norm_layer: NormLayer | None = None,
        activation: Activation | None = None,
        residual_add: ResidualAdd | None = None,
        skip: bool = True,
        zero_init_last_gamma: bool = False,
        drop_path: float = 0.0,
        dtype: torch.dtype | None = torch.float64,
    ) -> None:
        super().__init__()
        self.in_channels = _check_positive_int(in_channels, "in_channels")
        self.planes = _check_positive_int(planes, "planes")
        self.stride = _check_positive_int(stride, "stride")
        self.out_channels = planes * self.expansion
        drop_path = float(drop_path)
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(
                f"drop_path must lie in [0, 1), got drop_path={drop_path!r}; it is the "
                f"probability of dropping the residual branch of a sample"
            )
        if drop_path > 0.0 and not skip:
            raise ValueError(
                f"drop_path={drop_path} needs the shortcut: with skip=False dropping the branch "
                f"drops the whole signal; use drop_path=0.0 for a plain block"
            )
        self.norm_layer = norm_layer if norm_layer is not None else nn.BatchNorm2d
        self.activation = activation if activation is not None else nn.ReLU
        self.residual_add = residual_add if residual_add is not None else add
        self.skip = bool(skip)
        self.drop_prob = drop_path

        self._build_branch()
        self.act_out = self.activation()
        # Projection shortcut (He et al. 2016, option B) only where the shapes differ; a plain
        # block has no shortcut and so no projection either.
        self.downsample: nn.Module | None = None
        if self.skip and (self.stride != 1 or self.in_channels != self.out_channels):
            self.downsample = nn.Sequential(
                conv1x1(self.in_channels, self.out_channels, self.stride),
                self.norm_layer(self.out_channels),
            )
        if dtype is not None:
            self.to(dtype)
        if zero_init_last_gamma:
            self.zero_init_last_gamma_()

    # subclasses -------------------------------------------------------------------------------
    def _build_branch(self) -> None:
        raise NotImplementedError

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual function F(x), ending with the last norm layer (no activation)."""
        raise NotImplementedError

    @property
    def last_norm(self) -> nn.Module:
        """The branch's last norm layer, whose gamma zero-init sets to 0."""
        raise NotImplementedError

    # shared -----------------------------------------------------------------------------------
    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The identity path: ``x``, or its 1x1-conv + norm projection where shapes change."""
        return x if self.downsample is None else self.downsample(x)

    def zero_init_last_gamma_(self) -> None:
        """Set the last norm's gamma to 0, so the block starts as ``act_out(shortcut(x))``."""
        weight = getattr(self.last_norm, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise ValueError(
                f"zero_init_last_gamma needs a norm layer with a 'weight' (gamma) parameter, "
                f"got {type(self.last_norm).__name__} without one; use an affine norm layer or "
                f"zero_init_last_gamma=False"
            )
        with torch.no_grad():
            weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if not self.skip:
            return self.act_out(out)
        out = drop_path(out, self.drop_prob, self.training)
        return self.act_out(self.residual_add(out, self.shortcut(x)))


class BasicBlock(ResidualBlock):
    """Two 3x3 convs (He et al. 2016, Fig. 5 left; ResNet-18/34). ``out_channels = planes``."""

    expansion = 1

    def _build_branch(self) -> None:
        self.conv1 = conv3x3(self.in_channels, self.planes, self.stride)
        self.bn1 = self.norm_layer(self.planes)
        self.act1 = self.activation()
        self.conv2 = conv3x3(self.planes, self.planes)
        self.bn2 = self.norm_layer(self.planes)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))

    @property
    def last_norm(self) -> nn.Module:
        return self.bn2


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (with the stride: v1.5), 1x1 expand (He et al. 2016, Fig. 5 right).

    ``out_channels = 4 * planes``. torchvision's v1.5 puts the stride in the 3x3 conv where the
    paper's v1 put it in the first 1x1, which skips three quarters of the input.
    """

    expansion = 4

    def _build_branch(self) -> None:
        self.conv1 = conv1x1(self.in_channels, self.planes)
        self.bn1 = self.norm_layer(self.planes)
        self.act1 = self.activation()
        self.conv2 = conv3x3(self.planes, self.planes, self.stride)
        self.bn2 = self.norm_layer(self.planes)
        self.act2 = self.activation()
        self.conv3 = conv1x1(self.planes, self.out_channels)
        self.bn3 = self.norm_layer(self.out_channels)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    @property
    def last_norm(self) -> nn.Module:
        return self.bn3

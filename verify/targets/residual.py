"""Residual-block targets: the catalog and the blocks it is built from.

A residual target's ``factory(in_channels, planes, stride)`` returns a float32 ``nn.Module`` with
torchvision's parameter names (``conv1``, ``bn1``, ..., ``downsample.0``, ``downsample.1``), so
the float64 reference block of :mod:`reference.residual` built from the same seed hands it its
weights through ``load_state_dict`` and both compute the same function. ``target.options`` says
which reference architecture that is: ``block`` ("basic" or "bottleneck") and ``drop_path`` (the
stochastic-depth probability, 0 for none).

torchvision cannot be installed here, so the implementations under test are the project's blocks
run the way a training script runs them: float32, in-place ReLU (``nn.ReLU(inplace=True)``, as
torchvision's ResNet), NCHW or channels_last, eager or through torch.compile, with or without
stochastic depth. verify.adapters.residual runs any of them (and the mutants) on a case.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from reference.residual import BasicBlock, Bottleneck
from verify.targets.base import Target

#: Drop-path probability of the stochastic-depth targets (torchvision's ResNet-style default
#: range is 0.1-0.5; 0.2 makes the 1/(1-p) rescaling a 25% effect).
DROP_PATH_P = 0.2


def inplace_relu() -> nn.Module:
    return nn.ReLU(inplace=True)


def basic_block(
    in_channels: int, planes: int, stride: int = 1, *, drop_path: float = 0.0
) -> nn.Module:
    """reference.residual.BasicBlock in float32 with in-place ReLU."""
    return BasicBlock(
        in_channels,
        planes,
        stride=stride,
        activation=inplace_relu,
        drop_path=drop_path,
        dtype=torch.float32,
    )


def bottleneck_block(in_channels: int, planes: int, stride: int = 1) -> nn.Module:
    """reference.residual.Bottleneck (v1.5) in float32 with in-place ReLU."""
    return Bottleneck(
        in_channels, planes, stride=stride, activation=inplace_relu, dtype=torch.float32
    )


# --- the built-in residual targets ------------------------------------------------------------


def builtin() -> list[Target]:
    t = functools.partial(Target, family="residual")
    basic, bottleneck = {"block": "basic"}, {"block": "bottleneck"}
    dp = functools.partial(basic_block, drop_path=DROP_PATH_P)
    return [
        t(
            name="torch-basic-inplace",
            factory=basic_block,
            options=basic,
            description="BasicBlock, float32, in-place ReLU, NCHW",
        ),
        t(
            name="torch-bottleneck-inplace",
            factory=bottleneck_block,
            options=bottleneck,
            description="Bottleneck (v1.5), float32, in-place ReLU, NCHW",
        ),
        t(
            name="torch-basic-channels-last",
            factory=basic_block,
            options=basic,
            memory_format="channels_last",
            description="BasicBlock on channels_last input",
        ),
        t(
            name="torch-bottleneck-channels-last",
            factory=bottleneck_block,
            options=bottleneck,
            memory_format="channels_last",
            description="Bottleneck on channels_last input",
        ),
        t(
            name="torch-compile-basic",
            factory=basic_block,
            options=basic,
            compile=True,
            requires=("compile",),
            description="torch.compile(BasicBlock) (Inductor: C++ on CPU, Triton on GPU)",
        ),
        t(
            name="torch-basic-drop-path",
            factory=dp,
            options={"block": "basic", "drop_path": DROP_PATH_P},
            description=f"BasicBlock with stochastic depth p={DROP_PATH_P} (drop-path, "
            f"scaled by 1/(1-p) in training, identity in eval)",
        ),
    ]

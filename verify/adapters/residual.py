"""Run any residual-block target on a case: the float64 reference block of the same seed hands
the target its weights, then forward (and backward) the way a training step or inference does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from reference.residual import BasicBlock, Bottleneck, ResidualBlock
from verify.adapters.base import as_numpy, as_run, to_input
from verify.targets.base import Target

REFERENCE_BLOCKS: dict[str, type[ResidualBlock]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def block_kind(target: Target) -> str:
    return target.options.get("block", "basic")


def expansion(target: Target) -> int:
    return REFERENCE_BLOCKS[block_kind(target)].expansion


def drop_prob(target: Target) -> float:
    return float(target.options.get("drop_path", 0.0))


# --- the reference and the module under test -------------------------------------------------


def reference_block(
    target: Target,
    in_channels: int,
    planes: int,
    stride: int,
    *,
    seed: int,
    randomize_bn: bool = True,
) -> ResidualBlock:
    """The float64 reference block for ``target``, its weights drawn from ``seed``.

    Every parameter and buffer is rounded to float32 (kept as float64), so the float32 target
    that receives them computes with exactly the reference's weights and only its arithmetic
    differs. ``randomize_bn`` draws BN gamma (either sign), beta and running statistics, so
    eval mode and the affine step are exercised; without it BN is at init (gamma 1, beta 0).
    """
    cls = REFERENCE_BLOCKS[block_kind(target)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        ref = cls(
            in_channels, planes, stride=stride, drop_path=drop_prob(target), dtype=torch.float64
        )
    rng = np.random.default_rng([seed, 30_000])
    with torch.no_grad():
        for module in ref.modules():
            if isinstance(module, nn.BatchNorm2d) and randomize_bn:
                c = module.num_features
                module.weight.copy_(torch.from_numpy(rng.normal(1.0, 0.5, size=c)))
                module.bias.copy_(torch.from_numpy(rng.normal(0.0, 0.5, size=c)))
                module.running_mean.copy_(torch.from_numpy(rng.normal(0.0, 1.0, size=c)))
                module.running_var.copy_(torch.from_numpy(np.exp(rng.normal(0.0, 1.0, size=c))))
        for t in [*ref.parameters(), *ref.buffers()]:
            if t.is_floating_point():
                t.copy_(t.float().double())
    return ref


def build(target: Target, ref: ResidualBlock) -> nn.Module:
    """The target's module with the reference's weights and buffers (same names)."""
    module = target.factory(ref.in_channels, ref.planes, ref.stride)
    missing, unexpected = module.load_state_dict(ref.state_dict(), strict=False)
    if missing or unexpected:
        raise TypeError(
            f"target {target.name!r}: its block's state dict does not line up with "
            f"reference.residual's (torchvision names): missing {missing}, unexpected "
            f"{unexpected}; name the layers conv1, bn1, ..., downsample.0, downsample.1"
        )
    module.to(device=target.device)
    if target.memory_format == "channels_last":
        module.to(memory_format=torch.channels_last)
    return module


def call(target: Target, module: nn.Module, x: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """One forward. Drop-path draws its mask from torch's global generator: seeded here (and
    restored after), so a case is reproducible."""
    with torch.random.fork_rng(devices=[]), target.autocast_context():
        torch.manual_seed(seed % 2**63)
        return as_run(target, module)(x)  # compiled: never a silent eager fallback


@dataclass
class BlockRun:
    """What one forward (and backward) of a target block produced, as float64 arrays."""

    y: np.ndarray
    dx: np.ndarray | None = None


def run_blocks(
    target: Target,
    modules: list[nn.Module],
    values: np.ndarray,
    *,
    train: bool,
    seed: int,
    noncontiguous: bool = False,
    dy: np.ndarray | None = None,
) -> BlockRun:
    """Run ``modules`` in sequence on ``values``; with ``dy``, backpropagate it to the input.

    A training-mode forward runs as in a training step: autograd on, the input a non-leaf
    tensor that requires grad (``leaf * 1``, as from a previous layer: in-place operations on a
    leaf that requires grad raise at once, on a non-leaf they do not). An eval-mode forward
    without ``dy`` runs as inference, under no_grad, on the tensor as laid out.
    """
    for m in modules:
        m.train(train)
    x = to_input(target, values, noncontiguous=noncontiguous)
    if dy is None and not train:
        with torch.no_grad():
            y = x
            for i, m in enumerate(modules):
                y = call(target, m, y, seed=seed + i)
        return BlockRun(as_numpy(y))
    leaf = x.detach().requires_grad_(True)
    y = leaf * 1
    for i, m in enumerate(modules):
        y = call(target, m, y, seed=seed + i)
    if dy is None:
        return BlockRun(as_numpy(y))
    y.backward(torch.from_numpy(dy).to(device=y.device, dtype=y.dtype))
    return BlockRun(as_numpy(y), as_numpy(leaf.grad))

"""GroupNorm's benchmark: the training forward and its backward, 32 groups, at the sizes of a
diffusion UNet (Stable Diffusion 1.x at 512x512: 64x64 latents) and of ResNet-50 with group norm
(Wu & He 2018).

Minimum bytes, for x of shape (N, C, H, W) (``act`` bytes in the target's dtype), weight and
bias of C float32 values and the saved mean and 1/std of one float32 per (sample, group): each
input read once, each output written once.

- fwd-train: read x, weight, bias; write y and the saved mean and 1/std:
  2 act + 4 (2 C + 2 N G).
- bwd-train: read dy, x, weight, the saved mean and 1/std; write dx, dweight, dbias:
  3 act + 4 (3 C + 2 N G).
"""

from __future__ import annotations

import math

from verify.bench.families.base import (
    PARAM_BYTES,
    FamilyBench,
    Op,
    Size,
    activation_bytes,
    params_like_input,
)

#: Wu & He's default, and what diffusion UNets use.
GROUPS = 32


def groups(channels: int) -> int:
    """32 groups, or the largest count below that divides a shape's channels (a --size whose C
    is not a multiple of 32: GroupNorm needs C divisible by the groups)."""
    return math.gcd(int(channels), GROUPS)


def _bytes(acts: int, per_channel: int, per_group: int):
    def count(shape, dtype) -> int:
        n, c = shape[0], shape[1]
        vectors = (per_channel * c + per_group * n * groups(c)) * PARAM_BYTES
        return acts * activation_bytes(shape, dtype) + vectors

    return count


BENCH = FamilyBench(
    family="groupnorm",
    axes="N, C, H, W",
    size_column="layer",
    ranks=(4,),
    module=lambda factory, shape: factory(groups(shape[1]), shape[1]),
    param_dtype=params_like_input,
    ops=(
        Op(
            name="fwd-train",
            what="forward with autograd (saves mean and 1/std per group)",
            kind="forward",
            checks=("groupnorm.forward",),
            min_bytes=_bytes(2, 2, 2),
        ),
        Op(
            name="bwd-train",
            what="backward: dx, dweight, dbias",
            kind="backward",
            checks=("groupnorm.backward",),
            min_bytes=_bytes(3, 3, 2),
        ),
    ),
    # UNet blocks at batch 8 (each resolution's widest GroupNorm), ResNet-50-GN at its batch 32.
    sizes=(
        Size("SD UNet 64x64 block", (8, 320, 64, 64), quick=True),
        Size("SD UNet 32x32 block", (8, 640, 32, 32)),
        Size("SD UNet 16x16 block", (8, 1280, 16, 16), quick=True),
        Size("SD UNet 8x8 mid block", (8, 1280, 8, 8)),
        Size("ResNet-50-GN layer1 out", (32, 256, 56, 56)),
        Size("ResNet-50-GN layer4 out", (32, 2048, 7, 7)),
    ),
)

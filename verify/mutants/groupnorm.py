"""GroupNorm mutants: the op-by-op group norm (verify/targets/explicit_norms.py) with one public
bug each, right everywhere but in the configuration the report says it showed in. Ported from
the public-bug drop-ins (norm_bugs.py); where a report gives the symptom but not the code, the
mechanism is modelled (said so below).

Left out: norm_bugs.py's GroupNormHalfCount (the group's element count held in float16): its
error is at most 1/2048 of the statistics below 65504 values per group, inside float16's own
bound, and past 65504 (where the count is inf) a case exceeds the quick profile's budget.
"""

from __future__ import annotations

import functools

import torch

from verify.mutants.base import Mutants
from verify.strategies.groupnorm import GN_RANKS
from verify.targets.explicit_norms import ExplicitGroupNorm, is_channels_last

MUTANTS = Mutants("groupnorm", prefix="gn_")
register = functools.partial(MUTANTS.register, ranks=GN_RANKS)


@register(
    name="output_not_channels_last",
    bug="the output is contiguous for a channels_last input (values right)",
    caught_by=("groupnorm.output_layout",),
    shows_in="x layout channels_last",
)
class OutputNotChannelsLast(ExplicitGroupNorm):
    """pytorch/pytorch#111824 "GroupNorm & InstanceNorm does not handle channels_last
    correctly" (CUDA returned a contiguous output)."""

    def _layout(self, y, x):
        return y.contiguous()


@register(
    name="channels_last_no_transpose",
    bug="for channels_last input the groups are cut from consecutive NHWC memory (a reshape "
    "without the transpose), mixing channels and positions",
    caught_by=("groupnorm.forward",),
    shows_in="x layout channels_last",
)
class ChannelsLastNoTranspose(ExplicitGroupNorm):
    """tensorflow/addons#751 "tfa GroupNorm Incorrectly Reshapes": [N, H, W, C] reshaped to
    [N, G, H, W, C // G] without the transpose, "mixing of channels and H/W dimensions"."""

    def _grouped(self, xa, x):
        if is_channels_last(x):
            phys = xa.permute((0,) + tuple(range(2, x.dim())) + (1,)).contiguous()
            return phys.reshape(x.size(0), self.num_groups, -1)
        return super()._grouped(xa, x)

    def _ungroup(self, yg, x):
        if is_channels_last(x):
            phys = yg.reshape((x.size(0),) + tuple(x.shape[2:]) + (x.size(1),))
            return phys.permute((0, x.dim() - 1) + tuple(range(1, x.dim() - 1)))
        return super()._ungroup(yg, x)


@register(
    name="non_pow2_group_size",
    bug="each group's statistics read next_pow2(C/G) channels, masked only at C, so they take "
    "in the next group's channels (mechanism modelled)",
    caught_by=("groupnorm.forward",),
    shows_in="group size C/G not a power of two",
)
class NonPow2GroupSize(ExplicitGroupNorm):
    """flagos-ai/FlagGems#4984 "group_norm: wrong results when the group size (C // num_groups)
    is not a power of two"."""

    def _group_stats(self, xg, x):
        gs = self.num_channels // self.num_groups
        p2 = 1 << (gs - 1).bit_length()
        if p2 == gs:
            return super()._group_stats(xg, x)
        n, c = x.shape[:2]
        xc = xg.reshape(n, c, -1)
        means, variances = [], []
        for g in range(self.num_groups):
            part = xc[:, g * gs : min(g * gs + p2, c)].reshape(n, -1)
            mu = part.mean(-1, keepdim=True)
            means.append(mu)
            variances.append((part - mu).pow(2).mean(-1, keepdim=True))
        return torch.stack(means, 1), torch.stack(variances, 1)


@register(
    name="stats_over_tile_padded_hw",
    bug="the statistics are taken over H*W zero-padded to a multiple of 32 and divided by the "
    "padded count",
    caught_by=("groupnorm.forward",),
    shows_in="spatial size H*W not a multiple of 32",
)
class StatsOverTilePaddedHW(ExplicitGroupNorm):
    """tenstorrent/tt-metal#50682 "ttnn.group_norm fused kernel silently produces wrong output
    for non-tile-aligned H*W" (fixed by PR #51159)."""

    TILE = 32

    def _group_stats(self, xg, x):
        hw = x[0, 0].numel()
        pad = (-hw) % self.TILE
        if pad == 0:
            return super()._group_stats(xg, x)
        n, g = xg.shape[:2]
        gs = self.num_channels // self.num_groups
        padded = torch.cat([xg.reshape(n, g, gs, hw), xg.new_zeros(n, g, gs, pad)], -1)
        padded = padded.reshape(n, g, -1)
        mean = padded.mean(-1, keepdim=True)
        var = (padded - mean).pow(2).mean(-1, keepdim=True)
        return mean, var


__all__ = ["MUTANTS"]

"""Pre-norm tail mutants: the op-by-op add + RMSNorm (verify/targets/explicit_norms.py) with one
public bug each, right everywhere but in the configuration the report says it showed in. Ported
from the public-bug drop-ins (norm_bugs.py); where a report gives the symptom but not the code,
the mechanism is modelled (said so below)."""

from __future__ import annotations

import functools
import math

import torch

from verify.mutants.base import Mutants
from verify.strategies.rows import ROW_RANKS
from verify.targets.explicit_norms import ExplicitAddRMSNorm, acc_dtype

MUTANTS = Mutants("prenorm", prefix="prenorm_")
register = functools.partial(MUTANTS.register, ranks=ROW_RANKS)


@register(
    name="norms_unrounded_sum",
    bug="stores the bfloat16 stream but normalises the unrounded float32 sum x + residual",
    caught_by=("prenorm.normalises_stored_stream",),
    shows_in="bfloat16/float16 activations (float32 is right: the sum is the stored value)",
    dtype="bfloat16",
)
class NormsUnroundedSum(ExplicitAddRMSNorm):
    """vllm-project/vllm-omni PR #6878 "[Bugfix] Preserve BF16 residual semantics in fused
    MiniMax-H3 modulation" (the fused kernel stored the bf16 residual but fed the fp32 sum to
    RMSNorm); the same class in ROCm/aiter PR #2586 (fused allreduce + RMSNorm)."""

    def _norm_input(self, x, residual, stream):
        acc = acc_dtype(x.dtype)
        return x.to(acc) + residual.to(acc)


@register(
    name="truncates_residual",
    bug="the stream is stored by truncating the float32 sum to bfloat16, not rounding it to "
    "nearest even",
    caught_by=("prenorm.residual_out",),
    shows_in="bfloat16 activations",
    dtype="bfloat16",
)
class TruncatesResidual(ExplicitAddRMSNorm):
    """ROCm/aiter#5151 "rmsnorm2d_fwd_with_add truncates fp32->bf16 on gfx942, biasing
    residual_out and compounding across layers"."""

    def _residual(self, x, residual):
        if x.dtype != torch.bfloat16:
            return super()._residual(x, residual)
        s = (x.float() + residual.float()).contiguous()
        return (s.view(torch.int32) & ~0xFFFF).view(torch.float32).to(torch.bfloat16)


@register(
    name="only_hidden_4096",
    bug="the sum of squares is always taken over four 1024-wide chunks: NaN below hidden size "
    "4096, columns dropped above (mechanism modelled)",
    caught_by=("prenorm.forward",),
    shows_in="hidden n other than 4096",
)
class OnlyHidden4096(ExplicitAddRMSNorm):
    """vllm-project/vllm PR #44692 "[Bugfix][Kernel] Fix mHC fused-RMSNorm big-fuse miscompile
    for hidden_size != 4096" (NaN at 2048/3072, errors 0.17-0.55 at 5120-8192; "the path was
    evidently only validated at hidden_size=4096")."""

    WIDTH = 4096

    def _rms(self, sa, x):
        k = len(self.normalized_shape)
        n = math.prod(self.normalized_shape)
        if n == self.WIDTH:
            return super()._rms(sa, x)
        rows = sa.reshape(*sa.shape[: sa.dim() - k], n)
        if n < self.WIDTH:  # reads past the row: garbage, NaN here
            ms = torch.full((*rows.shape[:-1], 1), math.nan, dtype=sa.dtype, device=sa.device)
        else:
            ms = rows[..., : self.WIDTH].pow(2).sum(-1, keepdim=True) / n
        y = (rows * torch.rsqrt(ms + self._eps_for(x))).reshape(sa.shape)
        if self.weight is not None:
            y = y * self.weight.to(sa.dtype)
        return y.to(x.dtype)


__all__ = ["MUTANTS"]

"""LayerNorm mutants: the op-by-op layer norm (verify/targets/explicit_norms.py) with one public
bug each, right everywhere but in the configuration the report says it showed in. Ported from
the public-bug drop-ins (norm_bugs.py); where a report gives the symptom but not the code, the
mechanism is modelled (said so below).

Left out: apex#411's rows past 65535 (row i normalised with row i mod 65535's statistics): it
needs 65536 rows, past the quick profile's 20,000-element budget, so no quick run could kill it.
"""

from __future__ import annotations

import functools

import torch

from verify.mutants.base import Mutants
from verify.strategies.rows import ROW_RANKS
from verify.targets.explicit_norms import ExplicitLayerNorm, acc_dtype

MUTANTS = Mutants("layernorm", prefix="ln_")
register = functools.partial(MUTANTS.register, ranks=ROW_RANKS)


@register(
    name="one_pass_variance",
    bug="row variance as E[x^2] - E[x]^2 in float32 (catastrophic cancellation)",
    caught_by=("layernorm.forward",),
    shows_in="rows with |mean|/std past ~1e2 (kappa)",
)
class OnePassVariance(ExplicitLayerNorm):
    """pytorch/pytorch#51102, fixed by PR #55044 "Fix LayerNorm instability issues" ("Both
    kernels compute the squared sum which causes low precision for large values"); the same
    formula was rejected in review of triton-lang/triton PR #6413 and discussed for Inductor in
    pytorch/pytorch#143337."""

    def _stats(self, xa):
        dims = self._dims()
        mean = xa.mean(dims, keepdim=True)
        var = (xa * xa).mean(dims, keepdim=True) - mean * mean
        return mean, var.clamp_min(0)


@register(
    name="weight_ignored_without_bias",
    bug="the weight is applied only when there is a bias too (LayerNorm(bias=False) "
    "normalises without its weight)",
    caught_by=("layernorm.forward",),
    shows_in="elementwise_affine True x bias False",
)
class WeightIgnoredWithoutBias(ExplicitLayerNorm):
    """pytorch/pytorch#69208 "layer_norm cuda kernel generates wrong result when either gamma or
    bias is missing" (the fast kernel assumed gamma and beta come in pairs; see also #108048)."""

    def _affine(self, y, acc):
        if self.weight is not None and self.bias is not None:
            return y * self.weight.to(acc) + self.bias.to(acc)
        return y


@register(
    name="drops_columns_past_block",
    bug="statistics over the first 65536/element_size columns only; later columns are not "
    "written (zeros)",
    caught_by=("layernorm.forward",),
    shows_in="hidden n > 16384 (float32) or 32768 (half)",
)
class DropsColumnsPastBlock(ExplicitLayerNorm):
    """facebookresearch/xformers#785 "Triton layer norm kernel does not include columns greater
    than BLOCK_SIZE_N" (BLOCK_SIZE_N = min(65536 // element_size, next_pow2(N)), guarded by a
    host-side assert only)."""

    def forward(self, x):
        n = x.shape[-1]
        block = 65536 // x.element_size()
        if len(self.normalized_shape) != 1 or n <= block:
            return super().forward(x)
        self._check(x)
        acc = acc_dtype(x.dtype)
        head = x[..., :block].to(acc)
        mean = head.mean(-1, keepdim=True)
        var = (head - mean).pow(2).mean(-1, keepdim=True)
        yh = (head - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            yh = yh * self.weight[:block].to(acc)
        if self.bias is not None:
            yh = yh + self.bias[:block].to(acc)
        tail = torch.zeros((*x.shape[:-1], n - block), dtype=acc, device=x.device)
        return torch.cat([yh, tail], -1).to(x.dtype)


@register(
    name="dx_misses_statistics_terms",
    bug="dx leaves out the terms through the row mean and variance (dx = dy w rstd); forward, "
    "dweight and dbias right (mechanism modelled)",
    caught_by=("layernorm.backward",),
    shows_in="backward (dx)",
)
class DxMissesStatisticsTerms(ExplicitLayerNorm):
    """linkedin/Liger-Kernel PR #359 "BUG: Fix bug in layer norm tests": "the assert on the
    gradient of x was incorrectly compared against itself meaning that the assertion would always
    succeed". The mutant is the kind of kernel bug such a test cannot see."""

    def _normalize(self, xa, mean, var):
        return (xa - mean.detach()) * torch.rsqrt(var.detach() + self.eps)


class _BlockRowBackward(torch.autograd.Function):
    """Layer norm over the last dimension whose backward sums each row's two reductions over
    blocks of ``block`` rows (``tl.sum`` without an axis over a (BLOCK_ROW, N) tile)."""

    @staticmethod
    def forward(ctx, xa, w, eps, block):
        mean = xa.mean(-1, keepdim=True)
        rstd = torch.rsqrt((xa - mean).pow(2).mean(-1, keepdim=True) + eps)
        xhat = (xa - mean) * rstd
        ctx.save_for_backward(xhat, rstd, w)
        ctx.block = block
        return xhat * w

    @staticmethod
    def backward(ctx, gy):
        xhat, rstd, w = ctx.saved_tensors
        n = xhat.shape[-1]
        g = gy * w
        c1 = (g * xhat).sum(-1, keepdim=True)
        c2 = g.sum(-1, keepdim=True)
        rows, b = c1.numel(), ctx.block

        def block_sum(c):
            flat = c.reshape(-1)
            flat = torch.cat([flat, flat.new_zeros((-rows) % b)]).view(-1, b)
            return flat.sum(1, keepdim=True).expand(-1, b).reshape(-1)[:rows].view(c.shape)

        dx = (g - (xhat * block_sum(c1) + block_sum(c2)) / n) * rstd
        dw = (gy * xhat).reshape(-1, n).sum(0)
        return dx, dw, None, None


@register(
    name="backward_sums_across_row_block",
    bug="dx's per-row sums are taken over a block of 4 rows",
    caught_by=("layernorm.backward",),
    shows_in="backward with more than one row (one row is right)",
)
class BackwardSumsAcrossRowBlock(ExplicitLayerNorm):
    """flagos-ai/FlagGems PR #59 "[bugfix] fix error in layer_norm_backward_kernel":
    "layer_norm_backward_kernel does not work correctly with BLOCK_ROW_SIZE > 1"."""

    BLOCK_ROW = 4

    def forward(self, x):
        if len(self.normalized_shape) != 1 or self.weight is None:
            return super().forward(x)
        self._check(x)
        acc = acc_dtype(x.dtype)
        y = _BlockRowBackward.apply(x.to(acc), self.weight.to(acc), self.eps, self.BLOCK_ROW)
        if self.bias is not None:
            y = y + self.bias.to(acc)
        return y.to(x.dtype).contiguous()


__all__ = ["MUTANTS"]

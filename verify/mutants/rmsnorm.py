"""RMSNorm mutants: the op-by-op RMSNorm (verify/targets/explicit_norms.py) with one public bug
each, right everywhere but in the configuration the report says it showed in. Ported from the
public-bug drop-ins (norm_bugs.py); where a report gives the symptom but not the code, the
mechanism is modelled (said so below).

Left out: norm_bugs.py's RMSNormCastBeforeWeight (the normalised row cast to bfloat16 before a
bfloat16 weight multiplies it, HF Llama's order): a double rounding of at most one bfloat16 ulp,
inside every derived bound (the elementwise steps of a half-precision kernel may round in
storage precision: theory.rounding.Precision.u_elem). Only a bitwise comparison with torch's
order tells it apart, and that order is a convention (vLLM #42325 calls torch's the bug). The
same report's other half, the weight's dtype deciding the precision, is
``rms_weight_in_param_dtype`` below.
"""

from __future__ import annotations

import functools

import torch

from verify.mutants.base import Mutants
from verify.strategies.rows import ROW_RANKS
from verify.targets.explicit_norms import ExplicitRMSNorm, acc_dtype

MUTANTS = Mutants("rmsnorm", prefix="rms_")
register = functools.partial(MUTANTS.register, ranks=ROW_RANKS)


@register(
    name="weight_in_param_dtype",
    bug="the normalised row is cast to the weight's dtype before the weight multiplies it "
    "(x.to(weight.dtype) * weight): half weights make float32 activations half precision",
    caught_by=("rmsnorm.param_dtypes",),
    shows_in="float32 activations x bfloat16/float16 weight",
)
class WeightInParamDtype(ExplicitRMSNorm):
    """vllm-project/vllm#42325 / PR #42379 "Fix RMSNorm kernels to multiply in weight's native
    dtype" (vLLM's reference spec is ``x.to(weight.dtype) * weight``); NVIDIA/TransformerEngine
    #1132 and huggingface/transformers#33133 on which dtype the weight multiplies in."""

    def _apply_weight(self, y, x, acc):
        if self.weight is None:
            return y.to(x.dtype)
        return (y.to(self.weight.dtype) * self.weight).to(x.dtype)


@register(
    name="bf16_sum_of_squares",
    bug="the sum of squares is accumulated in bfloat16 (8-element partial sums added to a "
    "running bfloat16 total): long rows stop counting",
    caught_by=("rmsnorm.forward",),
    shows_in="bfloat16 x hidden n past ~2048",
    dtype="bfloat16",
)
class Bf16SumOfSquares(ExplicitRMSNorm):
    """sgl-project/sglang PR #27540 "[gemma4] Compute RMSNorm in fp32 to fix deep-layer
    hidden-state divergence vs HF": "the fused CUDA RMSNorm reduces the variance in the input
    (bf16) dtype". Mechanism: sequential accumulation of 8-element partial sums, the running sum
    rounded to the input dtype."""

    CHUNK = 8

    def _mean_square(self, xa, x):
        if x.dtype not in (torch.bfloat16, torch.float16) or len(self.normalized_shape) != 1:
            return super()._mean_square(xa, x)
        n = xa.shape[-1]
        sq = xa.pow(2)
        pad = (-n) % self.CHUNK
        if pad:
            sq = torch.cat([sq, sq.new_zeros(sq.shape[:-1] + (pad,))], -1)
        parts = sq.reshape(sq.shape[:-1] + (-1, self.CHUNK)).sum(-1)
        total = torch.zeros(parts.shape[:-1], dtype=x.dtype, device=x.device)
        for k in range(parts.shape[-1]):
            total = (total.float() + parts[..., k]).to(x.dtype)
        return (total.float() / n).unsqueeze(-1)


@register(
    name="eps_none_from_input_dtype",
    bug="eps=None resolved as finfo(input dtype).eps (2^-7 for bfloat16) instead of "
    "finfo(float32).eps",
    caught_by=("rmsnorm.eps_none",),
    shows_in="eps=None x bfloat16/float16 x rows with mean square below ~0.1",
    dtype="bfloat16",
)
class EpsNoneFromInputDtype(ExplicitRMSNorm):
    """pytorch/pytorch#189581 "nn.RMSNorm produces wildly incorrect normalization constants for
    bfloat16 tensors with small variances" (1.7x off at std 0.058); PR #173039 "Fix RMSNorm eps
    documentation to match opmath behavior" (since #142848 eps=None is finfo(float32).eps)."""

    def _eps_for(self, x):
        return self.eps if self.eps is not None else torch.finfo(x.dtype).eps


@register(
    name="gemma_offset",
    bug="Gemma's (1 + weight) applied to a torch/Llama-convention weight",
    caught_by=("rmsnorm.forward",),
    shows_in="elementwise_affine True (False is right)",
)
class GemmaOffset(ExplicitRMSNorm):
    """linkedin/Liger-Kernel PR #85 "Fix Gemma RMSNorm" (issue #74): one kernel served both
    conventions, Llama ``x_hat * w`` and Gemma ``x_hat * (1 + w)``."""

    def _apply_weight(self, y, x, acc):
        if self.weight is not None:
            y = y * (1.0 + self.weight.to(acc))
        return y.to(x.dtype)


class _InPlaceBackward(torch.autograd.Function):
    """RMSNorm over the last dimension whose backward writes dx into the incoming gradient's
    buffer and returns that buffer."""

    @staticmethod
    def forward(ctx, xa, w, eps):
        rstd = torch.rsqrt(xa.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(xa, w, rstd)
        return xa * rstd * w

    @staticmethod
    def backward(ctx, gy):
        xa, w, rstd = ctx.saved_tensors
        n = xa.shape[-1]
        xhat = xa * rstd
        g = gy * w
        dx = rstd * (g - xhat * (g * xhat).sum(-1, keepdim=True) / n)
        dw = (gy * xhat).reshape(-1, n).sum(0)
        gy.copy_(dx)  # dx written into the caller's dy
        return gy, dw, None


@register(
    name="inplace_backward_clobbers_grad",
    bug="the backward writes dx into the caller's incoming gradient (values of dx and dweight "
    "right)",
    caught_by=("rmsnorm.no_mutation",),
    shows_in="float32 x elementwise_affine True x one normalised dimension (backward)",
)
class InPlaceBackwardClobbersGrad(ExplicitRMSNorm):
    """linkedin/Liger-Kernel PR #1305 "fix(test): prevent in-place RMSNorm backward from
    clobbering shared grad buffers": LigerRMSNormFunction(in_place=True) "writes dX into the
    grad-output buffer it receives during backward"."""

    def forward(self, x):
        if x.dtype != torch.float32 or self.weight is None or len(self.normalized_shape) != 1:
            return super().forward(x)
        self._check(x)
        return _InPlaceBackward.apply(x, self.weight.to(x.dtype), self._eps_for(x))


@register(
    name="odd_hidden_row_boundary",
    bug="odd hidden sizes: the vectorised tail store of a row also writes column 0 of the next "
    "row, with the previous row's rstd (mechanism modelled)",
    caught_by=("rmsnorm.forward",),
    shows_in="float16/bfloat16 x odd hidden n x more than one row",
    dtype="float16",
)
class OddHiddenRowBoundary(ExplicitRMSNorm):
    """ROCm/aiter#5044 "HIP RMSNorm corrupts row-boundary elements for odd hidden sizes" (768
    passes, 769 corrupts column 0 of the following rows; fp16)."""

    def forward(self, x):
        y = super().forward(x)
        h = x.shape[-1]
        half = x.dtype in (torch.float16, torch.bfloat16)
        if not half or h % 2 == 0 or len(self.normalized_shape) != 1 or x.dim() < 2:
            return y
        acc = acc_dtype(x.dtype)
        xa = x.reshape(-1, h).to(acc)
        if xa.shape[0] < 2:
            return y
        rstd = torch.rsqrt(xa.pow(2).mean(-1) + self._eps_for(x))
        w0 = self.weight[0].to(acc) if self.weight is not None else 1.0
        y2 = y.reshape(-1, h).clone()
        y2[1:, 0] = (xa[1:, 0] * rstd[:-1] * w0).to(x.dtype)
        return y2.view(y.shape)


__all__ = ["MUTANTS"]


class _RowsSummedInHalf(torch.autograd.Function):
    """The weight broadcast over the rows; its gradient summed over the rows one after another
    with the running total rounded to ``dtype`` after each row."""

    @staticmethod
    def forward(ctx, weight, shape, dtype):
        ctx.dtype, ctx.weight_dtype = dtype, weight.dtype
        return weight.float().expand(shape)

    @staticmethod
    def backward(ctx, grad):
        rows = grad.reshape(-1, grad.shape[-1])
        total = torch.zeros(rows.shape[1], dtype=ctx.dtype)
        for row in rows:
            total = (total.float() + row).to(ctx.dtype)
        return total.to(ctx.weight_dtype), None, None


@register(
    name="dweight_half_accumulation",
    bug="the weight gradient is summed over the rows in the activations' dtype (a running "
    "bfloat16 total, as torch's CPU layer norm does): long batches stop counting",
    caught_by=("rmsnorm.backward",),
    shows_in="bfloat16 x elementwise_affine True x many rows (backward)",
    dtype="bfloat16",
)
class DweightHalfAccumulation(ExplicitRMSNorm):
    """The mechanism of torch 2.13's own CPU layer norm backward on half input (found by
    varguard: verify.checks.layernorm.HALF_PARAM_GRAD_ACCUMULATION) moved to RMSNorm's dweight,
    a reduction over the rows that kernels write as a second pass or with atomics."""

    def _apply_weight(self, y, x, acc):
        half = x.dtype in (torch.bfloat16, torch.float16)
        if self.weight is None or not half or len(self.normalized_shape) != 1:
            return super()._apply_weight(y, x, acc)
        return (y * _RowsSummedInHalf.apply(self.weight, y.shape, x.dtype)).to(x.dtype)

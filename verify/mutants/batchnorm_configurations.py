"""Batch-norm mutants that are right almost everywhere: each bug lives in one configuration (a
dtype, the layout of one tensor, a mode, a constructor argument, a size past a boundary), as the
public reports it is modelled on say it did. Only a search that reaches that configuration kills
it. Each is the closed-form batch norm (verify/targets/closed_form_bn.py) with one override.

Where the report gives the symptom but not the code, the mechanism is modelled (said so below).
"""

from __future__ import annotations

import torch

from verify.mutants.base import Mutants
from verify.targets.closed_form_bn import (
    ClosedFormBatchNorm1d,
    ClosedFormBatchNorm2d,
    ClosedFormBatchNorm3d,
    acc_dtype,
    bshape,
    is_channels_last,
    physical_as_channels_last,
    physical_as_contiguous,
)

MUTANTS = Mutants("batchnorm", prefix="bn_")


@MUTANTS.register(
    name="half_channels_last_eval_scrambled",
    bug="eval mode writes a float16 channels_last result as if it were NCHW",
    caught_by=("batchnorm.eval",),
    shows_in="dtype float16 x x layout channels_last x mode eval",
    dtype="float16",
)
class HalfChannelsLastEvalScrambled(ClosedFormBatchNorm2d):
    """pytorch/pytorch#62594 (channels_last input to a half-precision network gave wrong
    results; the TensorIterator path got the eval output's strides wrong)."""

    def _bn_apply(self, x, weight, bias, mean, invstd):
        y = super()._bn_apply(x, weight, bias, mean, invstd)
        half = x.dtype in (torch.float16, torch.bfloat16)
        if not self.training and half and is_channels_last(x):
            y = physical_as_contiguous(y)  # the values land in the wrong places
        return y


@MUTANTS.register(
    name="noncontiguous_read_as_contiguous",
    bug="a strided or expanded input is read from its storage as if it were contiguous",
    caught_by=("batchnorm.forward",),
    shows_in="x layout strided or expanded",
)
class NonContiguousReadAsContiguous(ClosedFormBatchNorm2d):
    """pytorch/pytorch#63224 "BatchNorm2d permutes data" (fixed by PR #63392)."""

    @staticmethod
    def _misread(x):
        if x.is_contiguous() or is_channels_last(x):
            return x
        need = x.storage_offset() + x.numel()
        if x.untyped_storage().nbytes() // x.element_size() >= need:
            return torch.as_strided(x, x.shape, torch.empty(x.shape).stride(), x.storage_offset())
        return x.flip(-1)  # storage too small to misread: still the wrong order

    def forward(self, input):
        return super().forward(self._misread(input))


@MUTANTS.register(
    name="grad_channels_last_input_contiguous",
    bug="backward reads a contiguous input through channels_last indexing when the incoming "
    "gradient is channels_last",
    caught_by=("batchnorm.backward",),
    shows_in="dy layout channels_last x x layout contiguous",
)
class GradChannelsLastInputContiguous(ClosedFormBatchNorm2d):
    """pytorch/pytorch#64039, fixed by PR #64100 "Fix bad use of channels last kernel in sync
    batch norm backward": the kernel was chosen from grad_output's layout alone."""

    def _bn_backward(self, grad_out, x, weight, mean, invstd, use_batch_stats, needs):
        if is_channels_last(grad_out) and x.is_contiguous() and not is_channels_last(x):
            x = physical_as_channels_last(x)
        return super()._bn_backward(grad_out, x, weight, mean, invstd, use_batch_stats, needs)


@MUTANTS.register(
    name="grad_input_not_channels_last",
    bug="dx comes back contiguous for a channels_last_3d input (values right)",
    caught_by=("batchnorm.output_layout",),
    shows_in="x layout channels_last x backward (5-D)",
    ranks=(5,),
)
class GradInputNotChannelsLast(ClosedFormBatchNorm3d):
    """pytorch/pytorch#107199 (CUDA native_batch_norm_backward returned a non-channels-last
    gradient for a channels_last input)."""

    def _grad_input_format(self, x, grad_out):
        return torch.contiguous_format


@MUTANTS.register(
    name="eval_backward_as_training",
    bug="in eval mode the backward still differentiates through the batch statistics",
    caught_by=("batchnorm.eval_backward",),
    shows_in="mode eval+backward",
)
class EvalBackwardAsTraining(ClosedFormBatchNorm2d):
    """pytorch/xla#913 "Batchnorm produce wrong gradient in eval mode"; pytorch/pytorch#586."""

    def _grad_input(self, g, xhat, sum_g, sum_gx, w, invstd, m, use_batch_stats, x):
        return super()._grad_input(g, xhat, sum_g, sum_gx, w, invstd, m, True, x)


@MUTANTS.register(
    name="momentum_zero_as_none",
    bug="momentum=0 (running statistics frozen) taken for None (a cumulative average)",
    caught_by=("batchnorm.running_stats",),
    shows_in="momentum 0",
)
class MomentumZeroAsNone(ClosedFormBatchNorm2d):
    """Python truthiness: `if not self.momentum` treats 0.0 as None (no thread found for this
    exact bug; the momentum=0 confusion: pytorch/pytorch#15298)."""

    def _momentum_factor(self):
        eaf = 0.0 if not self.momentum else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            eaf = 1.0 / float(self.num_batches_tracked) if not self.momentum else self.momentum
        return eaf


@MUTANTS.register(
    name="batches_tracked_only_for_cumulative",
    bug="num_batches_tracked counted only when momentum is None",
    caught_by=("batchnorm.running_stats",),
    shows_in="momentum not None (the counter)",
)
class BatchesTrackedOnlyForCumulative(ClosedFormBatchNorm2d):
    """pytorch/pytorch#30440 proposed not keeping the counter when momentum is given (declined:
    it is public state); the mutant follows the proposal."""

    def _momentum_factor(self):
        eaf = 0.0 if self.momentum is None else self.momentum
        counting = (
            self.training and self.track_running_stats and self.num_batches_tracked is not None
        )
        if counting and self.momentum is None:
            self.num_batches_tracked.add_(1)
            eaf = 1.0 / float(self.num_batches_tracked)
        return eaf


@MUTANTS.register(
    name="eps_clamped",
    bug="eps below 1.001e-5 silently raised to 1.001e-5 (cuDNN's minimum)",
    caught_by=("batchnorm.forward",),
    shows_in="eps < 1e-5 with a channel variance near eps",
)
class EpsClamped(ClosedFormBatchNorm2d):
    """tensorflow/tensorflow#37768, #8090: fused_batch_norm raised epsilon to 1.001e-5."""

    def _eps_value(self):
        return max(self.eps, 1.001e-5)


@MUTANTS.register(
    name="half_bessel_factor",
    bug="float16 input: the count and m/(m-1) computed in float16 (exact only to 2048)",
    caught_by=("batchnorm.running_stats",),
    shows_in="dtype float16 x reduction m > 2048",
    dtype="float16",
)
class HalfBesselFactor(ClosedFormBatchNorm2d):
    """tensorflow/tensorflow PR #30230 "Bessel's correction generates NaNs in FP16": the factor
    n/(n-1) was computed in the input's type (wrong above 2048 values, NaN above 65504)."""

    def _bessel(self, m, x):
        if x.dtype == torch.float16:
            n = torch.tensor(float(m), dtype=torch.float16)
            return float(n / (n - torch.tensor(1.0, dtype=torch.float16)))
        return super()._bessel(m, x)


@MUTANTS.register(
    name="affine_false_no_running_update",
    bug="running statistics not updated when affine=False",
    caught_by=("batchnorm.running_stats",),
    shows_in="affine False",
)
class AffineFalseNoRunningUpdate(ClosedFormBatchNorm2d):
    """apache/mxnet#18673 "running mean and running var dont get updated when scale and center
    are false"."""

    def _should_update_running(self, running_passed):
        return running_passed and self.affine


@MUTANTS.register(
    name="channels_last_first_64_channels",
    bug="channels_last input: only the first 64 channels are normalised, the rest are zero",
    caught_by=("batchnorm.forward",),
    shows_in="x layout channels_last x channels C > 64",
)
class ChannelsLastFirst64Channels(ClosedFormBatchNorm2d):
    """pytorch/pytorch PR #57077 "Fix a numerical issue of CUDA channels-last SyncBatchNorm":
    "the output tensor only has first 64 channels being correct"."""

    def _bn_apply(self, x, weight, bias, mean, invstd):
        y = super()._bn_apply(x, weight, bias, mean, invstd)
        if self.training and is_channels_last(x) and x.size(1) > 64:
            y = y.clone()
            y[:, 64:] = 0
        return y


@MUTANTS.register(
    name="channels_last_reduction_tail_dropped",
    bug="channels_last, channels not a power of two: the statistics drop the tail past the last "
    "full tile of 4096 values (mechanism modelled)",
    caught_by=("batchnorm.forward",),
    shows_in="x layout channels_last x C not 2^k x reduction m > 4096",
)
class ChannelsLastReductionTailDropped(ClosedFormBatchNorm2d):
    """NVIDIA/apex#1768 "syncbn with channel_last=True produce wrong result when feature_num is
    not pow-of-two" (right at 10x10, wrong at 100x100)."""

    TILE = 4096

    def _batch_stats(self, x):
        mean, var, m = super()._batch_stats(x)
        c = x.size(1)
        if is_channels_last(x) and (c & (c - 1)) != 0 and m > self.TILE:
            rows = x.detach().permute(0, 2, 3, 1).reshape(-1, c).to(mean.dtype)
            kept = rows[: (m // self.TILE) * self.TILE]
            mean = kept.mean(0)
            var = (kept - mean).pow(2).mean(0)
        return mean, var, m


@MUTANTS.register(
    name="1d_reduces_channels_too",
    bug="BatchNorm1d on (N, C) input reduces over N and C (right for (N, C, L); mechanism "
    "modelled)",
    caught_by=("batchnorm.forward",),
    shows_in="rank 2-D",
    ranks=(2, 3),
)
class OneDReducesChannelsToo(ClosedFormBatchNorm1d):
    """NVIDIA-AI-IOT/torch2trt PR #934 "input of batchnorm1d can also be (N,C)"; dlshriver/dnnv
    PR #18 "Fix batchnorm operations for 1d inputs"."""

    def _batch_stats(self, x):
        mean, var, m = super()._batch_stats(x)
        if x.dim() == 2:
            xa = x.detach().to(mean.dtype)
            c = x.size(1)
            mean = xa.mean().expand(c).clone()
            var = (xa - xa.mean()).pow(2).mean().expand(c).clone()
        return mean, var, m


@MUTANTS.register(
    name="stale_folded_eval",
    bug="eval mode folds the running statistics at the first eval and never refolds them "
    "(mechanism modelled)",
    caught_by=("batchnorm.mode_switching",),
    shows_in="mode switches train -> eval -> train -> eval",
)
class StaleFoldedEval(ClosedFormBatchNorm2d):
    """Class of pytorch/pytorch#181696 (eval-mode BatchNorm constant-folded under
    torch.compile): a cached scale/shift outlives the training that changed it."""

    def forward(self, input):
        if not self.training and self.running_mean is not None and not hasattr(self, "_folded"):
            self._folded = (self.running_mean.clone(), self.running_var.clone())
        return super().forward(input)

    def _eval_stats(self, x):
        acc = acc_dtype(x.dtype)
        rm, rv = self._folded
        return rm.to(acc), rv.to(acc)


@MUTANTS.register(
    name="bf16_nchw_grad_low_precision",
    bug="bfloat16 NCHW input with float32 weights: the backward's sums accumulate in "
    "bfloat16 (mechanism modelled)",
    caught_by=("batchnorm.backward",),
    shows_in="dtype bfloat16 x x layout contiguous x backward",
    dtype="bfloat16",
)
class Bf16NchwGradLowPrecision(ClosedFormBatchNorm2d):
    """pytorch/pytorch#156513 "Native BFloat16 Mixed BatchNorm Train gives incorrect gradients"
    (NCHW bf16 with fp32 weights; NHWC right)."""

    def _grad_reduce(self, t, dims, x):
        mixed = self.weight is not None and self.weight.dtype == torch.float32
        if not (x.dtype == torch.bfloat16 and mixed and x.is_contiguous()):
            return super()._grad_reduce(t, dims, x)
        c = x.size(1)
        rows = t.transpose(0, 1).reshape(c, -1)
        # Vector-width partial sums (the last one a tail), added into a bfloat16 total.
        acc = torch.zeros(c, dtype=torch.bfloat16)
        for part in rows.split(64, dim=1):
            acc = (acc.float() + part.sum(1)).to(torch.bfloat16)
        return acc.to(t.dtype)


@MUTANTS.register(
    name="storage_offset_ignored",
    bug="a view that starts past its storage's first element is read from the storage's start",
    caught_by=("batchnorm.forward",),
    shows_in="x layout offset",
)
class StorageOffsetIgnored(ClosedFormBatchNorm2d):
    """The class of kernels that take the storage's pointer instead of the tensor's
    (data_ptr without the offset); no single public thread found."""

    def forward(self, input):
        if input.storage_offset() != 0:
            input = torch.as_strided(input, input.shape, input.stride(), 0)
        return super().forward(input)


__all__ = ["MUTANTS"]


@MUTANTS.register(
    name="dgamma_half_accumulation",
    bug="dgamma = sum dy x_hat is accumulated over the batch in the activations' dtype (a "
    "running bfloat16 total): once the sum grows, it stops counting",
    caught_by=("batchnorm.backward",),
    shows_in="bfloat16 x dy law output x many values per channel (backward)",
    dtype="bfloat16",
)
class DgammaHalfAccumulation(ClosedFormBatchNorm2d):
    """The mechanism varguard measured in torch 2.13's own CPU layer norm backward on half
    input (verify.checks.layernorm.HALF_PARAM_GRAD_ACCUMULATION: dweight summed row after row
    into a bfloat16/float16 total) in a batch norm's dgamma. The sum grows only where dy
    follows the output (the dy law "output"); zero-mean dy hides it."""

    def _bn_backward(self, grad_out, x, weight, mean, invstd, use_batch_stats, needs):
        gx, gw, gb = super()._bn_backward(grad_out, x, weight, mean, invstd, use_batch_stats, needs)
        if gw is None or x.dtype not in (torch.bfloat16, torch.float16):
            return gx, gw, gb
        acc = mean.dtype
        xhat = (x.to(acc) - bshape(x, mean)) * bshape(x, invstd)
        terms = (grad_out.to(acc) * xhat).transpose(0, 1).reshape(x.size(1), -1).T
        total = torch.zeros(x.size(1), dtype=x.dtype)
        for row in terms:
            total = (total.float() + row).to(x.dtype)
        return gx, total.to(weight.dtype), gb

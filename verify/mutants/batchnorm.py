"""Batch-norm mutants: ExplicitBatchNorm2d with one real, known bug each."""

from __future__ import annotations

import torch

from verify.mutants.base import Mutants
from verify.targets.explicit_bn import ExplicitBatchNorm2d

MUTANTS = Mutants("batchnorm", prefix="bn_")


@MUTANTS.register(
    name="one_pass_variance",
    bug="variance as E[x^2] - E[x]^2 in float32",
    caught_by=("batchnorm.forward", "batchnorm.running_stats"),
)
class OnePassVariance(ExplicitBatchNorm2d):
    def _stats(self, xa):
        mean = xa.mean(dim=(0, 2, 3))
        return mean, (xa * xa).mean(dim=(0, 2, 3)) - mean * mean  # cancels catastrophically


@MUTANTS.register(
    name="biased_running_var",
    bug="running_var updated with the biased variance",
    caught_by=("batchnorm.running_stats",),
)
class BiasedRunningVar(ExplicitBatchNorm2d):
    def _update_running(self, mean, var, m):
        super()._update_running(mean, var * (m - 1) / m, m)  # stores the biased variance


@MUTANTS.register(
    name="eps_on_std",
    bug="eps added to the standard deviation instead of the variance",
    caught_by=("batchnorm.forward",),
)
class EpsOnStd(ExplicitBatchNorm2d):
    def _normalize(self, xa, mean, var):
        return (xa - mean[None, :, None, None]) / (torch.sqrt(var[None, :, None, None]) + self.eps)


@MUTANTS.register(
    name="no_eps",
    bug="no eps: constant channels divide by zero",
    caught_by=("batchnorm.forward",),
)
class NoEps(ExplicitBatchNorm2d):
    def _normalize(self, xa, mean, var):
        return (xa - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None])


@MUTANTS.register(
    name="keras_momentum",
    bug="momentum read in the Keras convention",
    caught_by=("batchnorm.running_stats",),
)
class KerasMomentum(ExplicitBatchNorm2d):
    def _factor(self):
        return 1.0 - super()._factor()  # reads torch's momentum as Keras' (weight of the old)


@MUTANTS.register(
    name="half_accumulation",
    bug="sums accumulated in float16",
    caught_by=("batchnorm.forward",),
)
class HalfAccumulation(ExplicitBatchNorm2d):
    """Sums accumulated in float16 (pairwise, each partial sum rounded to half)."""

    @staticmethod
    def _half_sum(t: torch.Tensor) -> torch.Tensor:
        rows = t.transpose(0, 1).reshape(t.shape[1], -1).to(torch.float16)
        while rows.shape[1] > 1:
            if rows.shape[1] % 2:
                rows = torch.cat([rows, torch.zeros_like(rows[:, :1])], dim=1)
            rows = (rows[:, 0::2] + rows[:, 1::2]).to(torch.float16)
        return rows[:, 0].to(t.dtype)

    def _stats(self, xa):
        m = xa.numel() // xa.shape[1]
        mean = self._half_sum(xa) / m
        var = self._half_sum((xa - mean[None, :, None, None]) ** 2) / m
        return mean, var


@MUTANTS.register(
    name="eval_uses_batch_stats",
    bug="eval mode normalises with batch statistics",
    caught_by=("batchnorm.eval",),
)
class EvalUsesBatchStats(ExplicitBatchNorm2d):
    def _use_batch_stats(self):
        return True


@MUTANTS.register(
    name="backward_stats_constant",
    bug="backward treats mean and variance as constants",
    caught_by=("batchnorm.backward",),
)
class BackwardStatsConstant(ExplicitBatchNorm2d):
    def _stats(self, xa):
        mean, var = super()._stats(xa)
        return mean.detach(), var.detach()  # gradient ignores d(mean)/dx and d(var)/dx


@MUTANTS.register(
    name="mutates_input",
    bug="inference path normalises the input tensor in place",
    caught_by=("batchnorm.no_mutation",),
)
class MutatesInput(ExplicitBatchNorm2d):
    """Inference fast path that normalises the caller's tensor in place."""

    def forward(self, x):
        if not torch.is_grad_enabled() and x.dtype == torch.float32:
            self._validate(x)
            mean, var = (
                self._stats(x) if self._use_batch_stats() else (self.running_mean, self.running_var)
            )
            x.sub_(mean[None, :, None, None]).div_(torch.sqrt(var[None, :, None, None] + self.eps))
            return self._affine(x)
        return super().forward(x)


@MUTANTS.register(
    name="unbiased_normalisation",
    bug="normalises with the unbiased variance",
    caught_by=("batchnorm.forward",),
)
class UnbiasedNormalisation(ExplicitBatchNorm2d):
    def _stats(self, xa):
        mean, var = super()._stats(xa)
        m = xa.numel() // xa.shape[1]
        return mean, var * m / (m - 1)  # normalises with the unbiased variance


@MUTANTS.register(
    name="momentum_none_ignored",
    bug="momentum=None (cumulative average) treated as 0.1",
    caught_by=("batchnorm.running_stats",),
)
class MomentumNoneIgnored(ExplicitBatchNorm2d):
    def _factor(self):
        return 0.1 if self.momentum is None else self.momentum


@MUTANTS.register(
    name="last_channel_unwritten",
    bug="output's last channel never written",
    caught_by=("batchnorm.poisoned_outputs", "batchnorm.forward"),
)
class LastChannelUnwritten(ExplicitBatchNorm2d):
    """Off-by-one in the channel loop of a hand-written kernel."""

    def forward(self, x):
        y = super().forward(x)
        out = torch.empty_like(y)
        last = y.shape[1] - 1 if y.shape[1] > 1 else y.shape[1]
        out[:, :last] = y[:, :last]
        return out


@MUTANTS.register(
    name="no_validation",
    bug="one value per channel in training accepted silently",
    caught_by=("batchnorm.bad_input",),
)
class NoValidation(ExplicitBatchNorm2d):
    """Skips input checks: one value per channel silently yields beta."""

    def _validate(self, x):
        pass

    def _update_running(self, mean, var, m):
        if m > 1:
            super()._update_running(mean, var, m)

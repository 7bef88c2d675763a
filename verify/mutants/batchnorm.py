"""Batch-norm mutants: ExplicitBatchNorm2d with one real, known bug each."""

from __future__ import annotations

import torch

from verify.mutants.base import Mutant
from verify.targets.base import Target
from verify.targets.explicit_bn import ExplicitBatchNorm2d


class OnePassVariance(ExplicitBatchNorm2d):
    def _stats(self, xa):
        mean = xa.mean(dim=(0, 2, 3))
        return mean, (xa * xa).mean(dim=(0, 2, 3)) - mean * mean  # cancels catastrophically


class BiasedRunningVar(ExplicitBatchNorm2d):
    def _update_running(self, mean, var, m):
        super()._update_running(mean, var * (m - 1) / m, m)  # stores the biased variance


class EpsOnStd(ExplicitBatchNorm2d):
    def _normalize(self, xa, mean, var):
        return (xa - mean[None, :, None, None]) / (torch.sqrt(var[None, :, None, None]) + self.eps)


class NoEps(ExplicitBatchNorm2d):
    def _normalize(self, xa, mean, var):
        return (xa - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None])


class KerasMomentum(ExplicitBatchNorm2d):
    def _factor(self):
        return 1.0 - super()._factor()  # reads torch's momentum as Keras' (weight of the old)


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


class EvalUsesBatchStats(ExplicitBatchNorm2d):
    def _use_batch_stats(self):
        return True


class BackwardStatsConstant(ExplicitBatchNorm2d):
    def _stats(self, xa):
        mean, var = super()._stats(xa)
        return mean.detach(), var.detach()  # gradient ignores d(mean)/dx and d(var)/dx


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


class UnbiasedNormalisation(ExplicitBatchNorm2d):
    def _stats(self, xa):
        mean, var = super()._stats(xa)
        m = xa.numel() // xa.shape[1]
        return mean, var * m / (m - 1)  # normalises with the unbiased variance


class MomentumNoneIgnored(ExplicitBatchNorm2d):
    def _factor(self):
        return 0.1 if self.momentum is None else self.momentum


class LastChannelUnwritten(ExplicitBatchNorm2d):
    """Off-by-one in the channel loop of a hand-written kernel."""

    def forward(self, x):
        y = super().forward(x)
        out = torch.empty_like(y)
        last = y.shape[1] - 1 if y.shape[1] > 1 else y.shape[1]
        out[:, :last] = y[:, :last]
        return out


class NoValidation(ExplicitBatchNorm2d):
    """Skips input checks: one value per channel silently yields beta."""

    def _validate(self, x):
        pass

    def _update_running(self, mean, var, m):
        if m > 1:
            super()._update_running(mean, var, m)


_BUGS = [
    (
        OnePassVariance,
        "one_pass_variance",
        "variance as E[x^2] - E[x]^2 in float32",
        ("batchnorm.forward", "batchnorm.running_stats"),
    ),
    (
        BiasedRunningVar,
        "biased_running_var",
        "running_var updated with the biased variance",
        ("batchnorm.running_stats",),
    ),
    (
        EpsOnStd,
        "eps_on_std",
        "eps added to the standard deviation instead of the variance",
        ("batchnorm.forward",),
    ),
    (NoEps, "no_eps", "no eps: constant channels divide by zero", ("batchnorm.forward",)),
    (
        KerasMomentum,
        "keras_momentum",
        "momentum read in the Keras convention",
        ("batchnorm.running_stats",),
    ),
    (HalfAccumulation, "half_accumulation", "sums accumulated in float16", ("batchnorm.forward",)),
    (
        EvalUsesBatchStats,
        "eval_uses_batch_stats",
        "eval mode normalises with batch statistics",
        ("batchnorm.eval",),
    ),
    (
        BackwardStatsConstant,
        "backward_stats_constant",
        "backward treats mean and variance as constants",
        ("batchnorm.backward",),
    ),
    (
        MutatesInput,
        "mutates_input",
        "inference path normalises the input tensor in place",
        ("batchnorm.no_mutation",),
    ),
    (
        UnbiasedNormalisation,
        "unbiased_normalisation",
        "normalises with the unbiased variance",
        ("batchnorm.forward",),
    ),
    (
        MomentumNoneIgnored,
        "momentum_none_ignored",
        "momentum=None (cumulative average) treated as 0.1",
        ("batchnorm.running_stats",),
    ),
    (
        LastChannelUnwritten,
        "last_channel_unwritten",
        "output's last channel never written",
        ("batchnorm.poisoned_outputs", "batchnorm.forward"),
    ),
    (
        NoValidation,
        "no_validation",
        "one value per channel in training accepted silently",
        ("batchnorm.bad_input",),
    ),
]

MUTANTS = [
    Mutant(
        name=f"bn_{name}",
        bug=bug,
        caught_by=caught,
        target=Target(
            name=f"mutant:bn_{name}", family="batchnorm", factory=cls, description=f"mutant: {bug}"
        ),
    )
    for cls, name, bug, caught in _BUGS
]

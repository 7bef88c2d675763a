"""A batch norm written op by op with a closed-form backward: correct, and the base of the
mutants whose bug lives in one configuration (a layout, a mode, a constructor argument).

Its backward is a custom autograd.Function (the closed form of Ioffe & Szegedy 2015, its
per-channel sums accumulated in float64), so a backward bug (eval-mode backward, the layout of the
incoming gradient, a low-precision reduction) can be planted as a small override of one hook.
Statistics are two-pass, in float32 for float16/bfloat16/float32 input and float64 for float64;
running_var takes the unbiased variance; momentum=None is a cumulative average;
num_batches_tracked counts every training step; eval mode uses the running statistics unless
the module tracks none; the output and dx are laid out as torch's (channels_last for a
channels_last input, else contiguous); the input errors are torch's. As targets
(``varguard-closed-form*``) they must pass every check: the control that shows each mutant fails
for its one bug and nothing else.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def cl_format(t: torch.Tensor):
    if t.dim() == 4:
        return torch.channels_last
    if t.dim() == 5:
        return torch.channels_last_3d
    return None


def is_channels_last(t: torch.Tensor) -> bool:
    fmt = cl_format(t)
    return fmt is not None and (not t.is_contiguous()) and t.is_contiguous(memory_format=fmt)


def out_format(t: torch.Tensor):
    """torch CPU batch_norm output format: channels_last if input is, else contiguous."""
    return cl_format(t) if is_channels_last(t) else torch.contiguous_format


def acc_dtype(dt: torch.dtype) -> torch.dtype:
    return torch.float64 if dt == torch.float64 else torch.float32


def bshape(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reshape a per-channel vector (C,) to broadcast against x (N, C, *)."""
    return v.view((1, -1) + (1,) * (x.dim() - 2))


def physical_as_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Logical tensor you get when the *contiguous* memory of x is read as if it
    were channels_last (N, *spatial, C) memory.  Same shape as x."""
    n, c = x.shape[:2]
    sp = x.shape[2:]
    flat = x.contiguous().reshape(-1)
    nhwc = flat.view((n,) + tuple(sp) + (c,))
    perm = (0, x.dim() - 1) + tuple(range(1, x.dim() - 1))
    return nhwc.permute(perm)


def physical_as_contiguous(x: torch.Tensor) -> torch.Tensor:
    """Logical tensor you get when the channels_last memory of x is read as if it
    were contiguous NC* memory.  Same shape as x."""
    perm = (0,) + tuple(range(2, x.dim())) + (1,)
    return x.permute(perm).contiguous().reshape(-1).view(x.shape)


class _BNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, use_batch_stats, mod):
        ctx.mod = mod
        ctx.use_batch_stats = use_batch_stats
        ctx.save_for_backward(x, weight, mean, invstd)
        return mod._bn_apply(x, weight, bias, mean, invstd)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mean, invstd = ctx.saved_tensors
        gx, gw, gb = ctx.mod._bn_backward(
            grad_out, x, weight, mean, invstd, ctx.use_batch_stats, ctx.needs_input_grad
        )
        return gx, gw, gb, None, None, None, None


class _ClosedFormMixin:
    """Correct op-by-op batch norm with a closed-form backward; mixed into torch.nn.BatchNormXd."""

    # ---- hooks a bug may override -------------------------------------------
    def _reduce_dims(self, x):
        return (0,) + tuple(range(2, x.dim()))

    def _eps_value(self):
        return self.eps

    def _batch_stats(self, x):
        """Returns (mean, biased var, count m) in the accumulation dtype."""
        acc = acc_dtype(x.dtype)
        dims = self._reduce_dims(x)
        xa = x.detach().to(acc)
        mean = xa.mean(dims)
        var = (xa - bshape(xa, mean)).pow(2).mean(dims)
        m = x.numel() // x.size(1)
        return mean, var, m

    def _bessel(self, m, x):
        return m / (m - 1) if m > 1 else float("nan")

    def _momentum_factor(self):
        """Exactly torch.nn.modules.batchnorm._BatchNorm.forward's logic."""
        eaf = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                eaf = 1.0 / float(self.num_batches_tracked)
        return eaf

    def _should_update_running(self, running_passed):
        return running_passed

    def _update_running(self, mean, var, m, eaf, x):
        with torch.no_grad():
            rm, rv = self.running_mean, self.running_var
            unbiased = var * self._bessel(m, x)
            rm.copy_((rm.to(mean.dtype) * (1 - eaf) + mean * eaf).to(rm.dtype))
            rv.copy_((rv.to(var.dtype) * (1 - eaf) + unbiased * eaf).to(rv.dtype))

    def _eval_stats(self, x):
        acc = acc_dtype(x.dtype)
        return self.running_mean.to(acc), self.running_var.to(acc)

    def _invstd(self, var):
        return torch.rsqrt(var + self._eps_value())

    def _output_format(self, x):
        return out_format(x)

    def _grad_input_format(self, x, grad_out):
        return out_format(x)

    def _bn_apply(self, x, weight, bias, mean, invstd):
        acc = mean.dtype
        xa = x.to(acc)
        y = (xa - bshape(xa, mean)) * bshape(xa, invstd)
        if weight is not None:
            y = y * bshape(xa, weight.to(acc))
        if bias is not None:
            y = y + bshape(xa, bias.to(acc))
        return y.to(x.dtype).contiguous(memory_format=self._output_format(x))

    def _grad_reduce(self, t, dims, x):
        """Per-channel sum used by the backward (sum(dy), sum(dy*xhat)); accumulated
        in float64 (more accurate than torch's float32 sums; cast back)."""
        return t.sum(dims, dtype=torch.float64).to(t.dtype)

    def _bn_backward(self, grad_out, x, weight, mean, invstd, use_batch_stats, needs):
        acc = mean.dtype
        dims = self._reduce_dims(x)
        m = x.numel() // x.size(1)
        g = grad_out.to(acc)
        xhat = (x.to(acc) - bshape(x, mean)) * bshape(x, invstd)
        sum_g = self._grad_reduce(g, dims, x)
        sum_gx = self._grad_reduce(g * xhat, dims, x)
        w = weight.to(acc) if weight is not None else torch.ones_like(invstd)
        gx = gw = gb = None
        if needs[0]:
            gx = self._grad_input(g, xhat, sum_g, sum_gx, w, invstd, m, use_batch_stats, x)
            gx = gx.to(x.dtype).contiguous(memory_format=self._grad_input_format(x, grad_out))
        if weight is not None and needs[1]:
            gw = sum_gx.to(weight.dtype)
        if needs[2]:
            gb = sum_g.to(self.bias.dtype)
        return gx, gw, gb

    def _grad_input(self, g, xhat, sum_g, sum_gx, w, invstd, m, use_batch_stats, x):
        scale = bshape(x, invstd * w)
        if use_batch_stats:
            return (g - bshape(x, sum_g) / m - xhat * bshape(x, sum_gx) / m) * scale
        return g * scale

    # ---- forward --------------------------------------------------------------
    def _check_channels(self, x):
        c = x.size(1)
        tracked = self.running_mean is not None and (not self.training or self.track_running_stats)
        if tracked and self.running_mean.numel() != c:
            raise RuntimeError(
                f"running_mean should contain {c} elements not {self.running_mean.numel()}"
            )
        if self.weight is not None and self.weight.numel() != c:
            raise RuntimeError(f"weight should contain {c} elements not {self.weight.numel()}")

    def forward(self, input):
        self._check_input_dim(input)
        self._check_channels(input)
        eaf = self._momentum_factor()
        if self.training:
            bn_training = True
        else:
            bn_training = (self.running_mean is None) and (self.running_var is None)
        running_passed = (not self.training or self.track_running_stats) and (
            self.running_mean is not None
        )
        if bn_training:
            F._verify_batch_size(input.size())
            mean, var, m = self._batch_stats(input)
            if self.training and self._should_update_running(running_passed):
                self._update_running(mean, var, m, eaf, input)
        else:
            mean, var = self._eval_stats(input)
        invstd = self._invstd(var)
        return _BNFunction.apply(input, self.weight, self.bias, mean, invstd, bn_training, self)


class ClosedFormBatchNorm1d(_ClosedFormMixin, nn.BatchNorm1d):
    pass


class ClosedFormBatchNorm2d(_ClosedFormMixin, nn.BatchNorm2d):
    pass


class ClosedFormBatchNorm3d(_ClosedFormMixin, nn.BatchNorm3d):
    pass


__all__ = [
    "ClosedFormBatchNorm1d",
    "ClosedFormBatchNorm2d",
    "ClosedFormBatchNorm3d",
    "acc_dtype",
    "bshape",
    "is_channels_last",
    "out_format",
    "physical_as_channels_last",
    "physical_as_contiguous",
]

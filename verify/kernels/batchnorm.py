"""Batch norm on the Triton kernels: an autograd function and a drop-in ``BatchNorm2d``.

:func:`batch_norm` computes ``y = gamma (x - mean) / sqrt(var + eps) + beta``, optionally followed
by ``+ shortcut`` and a ReLU in the same kernel (the fused tail of a residual block:
``relu(bn(x) + shortcut)``), with its backward. :class:`TritonBatchNorm2d` keeps everything else
of ``torch.nn.BatchNorm2d``: running statistics (unbiased variance), ``momentum=None`` (a
cumulative average), ``num_batches_tracked``, eval mode, ``track_running_stats=False``, and the
same input errors.

Statistics and arithmetic are float32 whatever the input dtype (float32, float16, bfloat16); the
output has the input's dtype and memory layout (NCHW or channels_last; other strides come back
NCHW).
"""

from __future__ import annotations

import torch

from verify.kernels import INTERPRETED
from verify.kernels import triton_bn as k

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_tensor(x: torch.Tensor) -> None:
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"input dtype {x.dtype}: the Triton batch-norm kernels compute in float32 and take "
            f"float32, float16 or bfloat16 input; convert it (x.float())"
        )
    if not INTERPRETED and x.device.type != "cuda":
        raise ValueError(
            f"input on {x.device}: Triton kernels run on a CUDA device, or on the CPU under the "
            f"interpreter (set TRITON_INTERPRET=1 before importing triton)"
        )


class _BatchNormFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x, weight, bias, shortcut, running_mean, running_var, batch_stats, factor, eps, relu,
        split,
    ):  # fmt: skip
        xd, layout = k.dense(x)
        w = weight.detach() if weight is not None else None
        b = bias.detach() if bias is not None else None
        residual = k.like(shortcut.detach(), layout) if shortcut is not None else None
        if batch_stats:
            y, mean, rstd = k.forward(
                xd, layout, w, b, eps=eps, running_mean=running_mean, running_var=running_var,
                factor=factor, residual=residual, relu=relu, split=split,
            )  # fmt: skip
        else:
            mean = running_mean.detach().to(torch.float32)
            rstd = 1.0 / torch.sqrt(running_var.detach().to(torch.float32) + eps)
            y = k.normalize(xd, layout, mean, rstd, w, b, residual=residual, relu=relu)
        ctx.layout = layout
        ctx.batch_stats = batch_stats
        ctx.split = split
        ctx.param_dtype = next((p.dtype for p in (weight, bias) if p is not None), torch.float32)
        ctx.save_for_backward(xd, weight, mean, rstd, y if relu else None)
        return y

    @staticmethod
    def backward(ctx, dy):
        xd, weight, mean, rstd, out = ctx.saved_tensors
        need_dx, need_dw, need_db, need_dres = ctx.needs_input_grad[:4]
        g = k.backward(
            k.like(dy, ctx.layout), xd, ctx.layout, mean, rstd,
            weight.detach() if weight is not None else None, batch_stats=ctx.batch_stats,
            out=out, want_dx=need_dx, want_dres=need_dres, want_sums=need_dw or need_db,
            split=ctx.split,
        )  # fmt: skip
        dw = g.sum_dy_xhat.to(ctx.param_dtype) if need_dw else None
        db = g.sum_dy.to(ctx.param_dtype) if need_db else None
        return g.dx, dw, db, g.dres, None, None, None, None, None, None, None


def batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    shortcut: torch.Tensor | None = None,
    relu: bool = False,
    split: int | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.batch_norm`` for 4-D input on the Triton kernels, plus the fused
    tail: with ``shortcut`` and/or ``relu``, ``relu(bn(x) + shortcut)`` in one pass over memory.

    ``training`` (or no running statistics) normalises with the batch's statistics and updates
    the running ones in place with ``momentum`` (the factor of the new value, as in torch).
    ``split`` asks for that many programs per block of channels in the reductions, forcing the
    multi-program schedule a GPU uses for large batches (see :mod:`verify.kernels.triton_bn`).
    """
    _check_tensor(x)
    if x.dim() != 4:
        raise ValueError(f"expected 4D input (got {x.dim()}D input)")
    if shortcut is not None and tuple(shortcut.shape) != tuple(x.shape):
        raise ValueError(
            f"shortcut of shape {tuple(shortcut.shape)} for input of shape {tuple(x.shape)}: "
            f"the residual add needs equal shapes (project the shortcut first)"
        )
    c = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):  # fmt: skip
        if t is not None and t.numel() != c:
            raise ValueError(f"{name} should contain {c} elements not {t.numel()}")
    batch_stats = training or running_mean is None or running_var is None
    if batch_stats and x.shape[0] * x.shape[2] * x.shape[3] == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {x.size()}"
        )
    if x.numel() == 0:
        return x.clone()
    if shortcut is not None:
        shortcut = shortcut.to(x.dtype)
    return _BatchNormFn.apply(
        x,
        weight,
        bias,
        shortcut,
        running_mean if training else (None if batch_stats else running_mean),
        running_var if training else (None if batch_stats else running_var),
        batch_stats,
        float(momentum),
        float(eps),
        bool(relu),
        split,
    )


class TritonBatchNorm2d(torch.nn.BatchNorm2d):
    """Drop-in for ``torch.nn.BatchNorm2d`` on the Triton kernels (same constructor and state).

    :meth:`forward_add_relu` is the fused residual tail ``relu(self(x) + shortcut)``.
    ``split`` (keyword only, default None: the kernels choose) asks for that many programs per
    block of channels in the reductions, forcing the multi-program schedule a GPU runs for large
    batches.
    """

    def __init__(self, *args, split: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if split is not None and (isinstance(split, bool) or int(split) < 1):
            raise ValueError(f"split={split!r}: give a positive number of programs, or None")
        self.split = split

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")

    def _run(self, x: torch.Tensor, shortcut: torch.Tensor | None, relu: bool) -> torch.Tensor:
        self._check_input_dim(x)
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"expected input with {self.num_features} channels (num_features), got "
                f"{x.shape[1]} channels in input of size {tuple(x.shape)}"
            )
        # torch.nn.modules.batchnorm._BatchNorm.forward, step for step.
        factor = 0.0 if self.momentum is None else self.momentum
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        if bn_training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.size()}"
            )
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_buffers = not self.training or self.track_running_stats
        return batch_norm(
            x,
            self.running_mean if use_buffers else None,
            self.running_var if use_buffers else None,
            self.weight,
            self.bias,
            bn_training,
            factor,
            self.eps,
            shortcut=shortcut,
            relu=relu,
            split=self.split,
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._run(input, None, False)

    def forward_add_relu(self, input: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """``relu(bn(input) + shortcut)`` in one kernel: the tail of a residual block."""
        return self._run(input, shortcut, True)


__all__ = ["SUPPORTED_DTYPES", "TritonBatchNorm2d", "batch_norm"]

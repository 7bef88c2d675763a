"""LayerNorm, RMSNorm, GroupNorm and the fused add + RMSNorm written out op by op in torch: correct,
and the base every mutant of those families edits.

Ported from the public-bug drop-ins the mutants come from (norm_bugs.py's RefLayerNorm,
RefRMSNorm, RefGroupNorm, RefFusedAddRMSNorm, checked there against torch in 72 configurations):
subclasses of torch's modules with their constructors and state, statistics two-pass in float32
(float64 for float64 input), the output in the input's dtype. Each step is its own method so that
a mutant overrides exactly one thing. As targets (``varguard-explicit-*``) they must pass every
check: the control showing that a mutant fails for its one bug and nothing else.
"""

from __future__ import annotations

import torch
from torch import nn


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The type the statistics are computed in: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def channels_last_format(t: torch.Tensor):
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())


def is_channels_last(t: torch.Tensor) -> bool:
    """Dense in the channels-last order and not also contiguous (size-1 dimensions make one
    tensor both)."""
    fmt = channels_last_format(t)
    return fmt is not None and not t.is_contiguous() and t.is_contiguous(memory_format=fmt)


def output_format(t: torch.Tensor):
    """The memory format an elementwise result of ``t`` takes in torch: channels-last in,
    channels-last out."""
    return channels_last_format(t) if is_channels_last(t) else torch.contiguous_format


def shape_error(normalized_shape, x: torch.Tensor) -> RuntimeError:
    """torch's message for an input whose trailing dimensions are not normalized_shape."""
    ns = list(normalized_shape)
    return RuntimeError(
        f"Given normalized_shape={ns}, expected input with shape [*, "
        f"{', '.join(map(str, ns))}], but got input of size{list(x.shape)}"
    )


class ExplicitLayerNorm(nn.LayerNorm):
    """Drop-in for torch.nn.LayerNorm: two-pass row statistics, y = (x - mean) rsqrt(var + eps)
    weight + bias, contiguous output."""

    def _dims(self) -> tuple[int, ...]:
        return tuple(range(-len(self.normalized_shape), 0))

    def _check(self, x: torch.Tensor) -> None:
        ns = tuple(self.normalized_shape)
        if x.dim() < len(ns) or tuple(x.shape[x.dim() - len(ns) :]) != ns:
            raise shape_error(ns, x)

    def _stats(self, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dims = self._dims()
        mean = xa.mean(dims, keepdim=True)
        var = (xa - mean).pow(2).mean(dims, keepdim=True)
        return mean, var

    def _normalize(self, xa, mean, var) -> torch.Tensor:
        return (xa - mean) * torch.rsqrt(var + self.eps)

    def _affine(self, y: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        if self.weight is not None:
            y = y * self.weight.to(acc)
        if self.bias is not None:
            y = y + self.bias.to(acc)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        acc = acc_dtype(x.dtype)
        xa = x.to(acc)
        mean, var = self._stats(xa)
        return self._affine(self._normalize(xa, mean, var), acc).to(x.dtype).contiguous()


class ExplicitRMSNorm(nn.RMSNorm):
    """Drop-in for torch.nn.RMSNorm: y = x rsqrt(mean(x^2) + eps) weight in float32, cast once;
    eps=None is finfo(float32).eps (finfo(float64).eps for float64), torch's opmath default."""

    def _dims(self) -> tuple[int, ...]:
        return tuple(range(-len(self.normalized_shape), 0))

    def _check(self, x: torch.Tensor) -> None:
        ns = tuple(self.normalized_shape)
        if x.dim() < len(ns) or tuple(x.shape[x.dim() - len(ns) :]) != ns:
            raise shape_error(ns, x)

    def _eps_for(self, x: torch.Tensor) -> float:
        return self.eps if self.eps is not None else torch.finfo(acc_dtype(x.dtype)).eps

    def _mean_square(self, xa: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return xa.pow(2).mean(self._dims(), keepdim=True)

    def _apply_weight(self, y: torch.Tensor, x: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        if self.weight is not None:
            y = y * self.weight.to(acc)
        return y.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        acc = acc_dtype(x.dtype)
        xa = x.to(acc)
        y = xa * torch.rsqrt(self._mean_square(xa, x) + self._eps_for(x))
        return self._apply_weight(y, x, acc).contiguous(memory_format=output_format(x))


class _CastKeepingFormat(torch.autograd.Function):
    """``x.to(dtype)`` whose gradient comes back in x's memory format: the reshapes into groups
    would otherwise hand a channels_last input a contiguous gradient (torch's own group norm
    keeps it channels_last)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        ctx.format, ctx.dtype = output_format(x), x.dtype
        return x.to(dtype, copy=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.to(ctx.dtype).contiguous(memory_format=ctx.format), None


class ExplicitGroupNorm(nn.GroupNorm):
    """Drop-in for torch.nn.GroupNorm: two-pass statistics of each (sample, group), per-channel
    affine, the output in the input's memory format."""

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() < 2 or x.size(1) != self.num_channels:
            raise RuntimeError(
                f"Expected weight to be a vector of size equal to the number of channels in "
                f"input, but got weight of shape [{self.num_channels}] and input of shape "
                f"{list(x.shape)}"
            )

    def _group_stats(self, xg: torch.Tensor, x: torch.Tensor):
        """xg: (N, G, values per group) -> mean, var of shape (N, G, 1)."""
        mean = xg.mean(-1, keepdim=True)
        var = (xg - mean).pow(2).mean(-1, keepdim=True)
        return mean, var

    def _grouped(self, xa: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return xa.reshape(x.size(0), self.num_groups, -1)

    def _ungroup(self, yg: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return yg.reshape(x.shape)

    def _layout(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return y.contiguous(memory_format=output_format(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        acc = acc_dtype(x.dtype)
        xa = _CastKeepingFormat.apply(x, acc)
        xg = self._grouped(xa, x)
        mean, var = self._group_stats(xg, x)
        y = self._ungroup((xg - mean) * torch.rsqrt(var + self.eps), x)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.weight is not None:
            y = y * self.weight.to(acc).view(shape)
        if self.bias is not None:
            y = y + self.bias.to(acc).view(shape)
        return self._layout(y.to(x.dtype), x)


class ExplicitAddRMSNorm(nn.RMSNorm):
    """The fused pre-norm step with the unfused semantics: ``forward(x, residual)`` returns
    ``(y, residual_out)`` with residual_out = x + residual in the input's dtype (rounded once)
    and y = RMSNorm(residual_out) in float32, cast once. Constructor of torch.nn.RMSNorm."""

    def _check(self, x: torch.Tensor, residual: torch.Tensor) -> None:
        ns = tuple(self.normalized_shape)
        if tuple(x.shape) != tuple(residual.shape):
            raise ValueError(
                f"x of shape {list(x.shape)} and residual of shape {list(residual.shape)}: the "
                f"branch output and the stream it is added to must have one shape"
            )
        if x.dim() < len(ns) or tuple(x.shape[x.dim() - len(ns) :]) != ns:
            raise shape_error(ns, x)

    def _residual(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return x + residual

    def _norm_input(self, x, residual, stream: torch.Tensor) -> torch.Tensor:
        """What is normalised: the stored (rounded) stream, in the accumulation type."""
        return stream.to(acc_dtype(x.dtype))

    def _eps_for(self, x: torch.Tensor) -> float:
        return self.eps if self.eps is not None else torch.finfo(acc_dtype(x.dtype)).eps

    def _rms(self, sa: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(-len(self.normalized_shape), 0))
        y = sa * torch.rsqrt(sa.pow(2).mean(dims, keepdim=True) + self._eps_for(x))
        if self.weight is not None:
            y = y * self.weight.to(sa.dtype)
        return y.to(x.dtype)

    def forward(self, x: torch.Tensor, residual: torch.Tensor):  # type: ignore[override]
        self._check(x, residual)
        stream = self._residual(x, residual)
        return self._rms(self._norm_input(x, residual, stream), x), stream


__all__ = [
    "ExplicitAddRMSNorm",
    "ExplicitGroupNorm",
    "ExplicitLayerNorm",
    "ExplicitRMSNorm",
    "acc_dtype",
    "channels_last_format",
    "is_channels_last",
    "output_format",
    "shape_error",
]

"""LayerNorm, RMSNorm and a fused residual add + RMSNorm on the Triton kernels.

:func:`layer_norm` and :func:`rms_norm` compute what ``torch.nn.functional.layer_norm`` and
``rms_norm`` do, over the trailing ``normalized_shape`` dimensions, with their backward;
:func:`add_rms_norm` is the pre-norm residual step ``h = x + residual; y = rms_norm(h)`` in one
pass over memory, returning both (vLLM's ``fused_add_rms_norm``). :class:`TritonLayerNorm`,
:class:`TritonRMSNorm` and :class:`TritonAddRMSNorm` are drop-ins with torch's constructors.

Statistics and arithmetic are float32 whatever the input dtype (float32, float16, bfloat16); the
output has the input's dtype and is contiguous (as torch's). Parameters may be float32 with
half-precision activations (mixed precision) or share the input's dtype; their gradients come
back in the parameters' dtype, reduced in float32.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from verify.kernels import INTERPRETED
from verify.kernels import triton_norms as k

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def default_rms_eps(dtype: torch.dtype) -> float:
    """The eps torch's ``rms_norm`` uses when given None: ``torch.finfo`` of the dtype it
    computes in, float32 for float32, float16 and bfloat16 input (torch 2.13: aten's
    ``_fused_rms_norm`` decomposition and kernels; its docstring's ``finfo(x.dtype)`` would be
    2^-7 for bfloat16, which torch does not use). tests/test_triton_norm_kernels.py checks this
    against the installed torch."""
    del dtype  # every supported dtype computes in float32
    return torch.finfo(torch.float32).eps


def _shape(normalized_shape: int | Sequence[int] | torch.Size) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        return (int(normalized_shape),)
    return tuple(int(s) for s in normalized_shape)


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _check(
    what: str, x: torch.Tensor, shape: tuple[int, ...], params: dict[str, torch.Tensor | None]
) -> None:
    """Input errors of torch's functions, and the kernels' own limits, before any launch."""
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"input dtype {x.dtype}: the Triton {what} kernels compute in float32 and take "
            f"float32, float16 or bfloat16 input; convert it (x.float())"
        )
    if not INTERPRETED and x.device.type != "cuda":
        raise ValueError(
            f"input on {x.device}: Triton kernels run on a CUDA device, or on the CPU under the "
            f"interpreter (set TRITON_INTERPRET=1 before importing triton)"
        )
    if len(shape) == 0:
        raise ValueError(
            f"normalized_shape=(): give the trailing dimension(s) of the input to normalise over "
            f"(the last one: normalized_shape={x.shape[-1] if x.dim() else 1})"
        )
    if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape) :]) != shape:
        # torch's message (a RuntimeError, as torch raises), so code catching torch's catches it.
        raise RuntimeError(
            f"Given normalized_shape={_fmt(shape)}, expected input with shape "
            f"[*, {_fmt(shape)[1:-1]}], but got input of size{_fmt(x.shape)}"
        )
    for name, p in params.items():
        if p is None:
            continue
        if tuple(p.shape) != shape:
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of "
                f"shape {_fmt(p.shape)} and normalized_shape = {_fmt(shape)}"
            )
        if p.dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                f"{name} dtype {p.dtype}: the Triton {what} kernels take float32, float16 or "
                f"bfloat16 parameters; convert the module (.float())"
            )
    if x.numel() >= 2**31:
        raise ValueError(
            f"input of {x.numel()} elements: the kernels index with 32-bit offsets; keep one "
            f"call below 2**31 elements (split the rows)"
        )


def _rows(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """x as the contiguous (M, D) matrix of its rows."""
    d = math.prod(shape)
    return x.contiguous().view(math.prod(x.shape[: x.dim() - len(shape)]), d)


def _detach(p: torch.Tensor | None) -> torch.Tensor | None:
    return p.detach().contiguous().view(-1) if p is not None else None


class _NormFn(torch.autograd.Function):
    """LayerNorm (center=True) or RMSNorm (center=False) over the rows of x."""

    @staticmethod
    def forward(ctx, x, weight, bias, shape, eps, center, block_d, programs):
        x2 = _rows(x, shape)
        y, mean, rstd = k.forward(
            x2, _detach(weight), _detach(bias), eps=eps, center=center, block_d=block_d
        )
        ctx.shape, ctx.center, ctx.block_d, ctx.programs = shape, center, block_d, programs
        ctx.bias_dtype = bias.dtype if bias is not None else None
        ctx.save_for_backward(x2, weight, mean, rstd)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, mean, rstd = ctx.saved_tensors
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        g = k.backward(
            dy.contiguous().view(x2.shape), x2, _detach(weight), mean, rstd, center=ctx.center,
            want_dx=need_dx, want_dweight=need_dw, want_dbias=need_db, block_d=ctx.block_d,
            programs=ctx.programs,
        )  # fmt: skip
        dx = g.dx.view(dy.shape) if need_dx else None
        dw = g.dweight.view(ctx.shape).to(weight.dtype) if need_dw else None
        db = g.dbias.view(ctx.shape).to(ctx.bias_dtype) if need_db else None
        return dx, dw, db, None, None, None, None, None


class _AddRMSNormFn(torch.autograd.Function):
    """(y, h): h = x + residual rounded to the storage dtype, y = rms_norm(h). Backward:
    dx = dresidual = dh + J^T dy (the rounding is differentiated as the identity, as torch's
    unfused x + residual is)."""

    @staticmethod
    def forward(ctx, x, residual, weight, shape, eps, inplace, block_d, programs):
        x2 = _rows(x, shape)
        r2 = _rows(residual, shape)
        # In place: residual is contiguous (checked), so r2 is a view of its storage.
        h2 = r2 if inplace else torch.empty_like(r2)
        y, _, rstd = k.forward(
            x2, _detach(weight), None, eps=eps, center=False, residual=r2, residual_out=h2,
            block_d=block_d,
        )  # fmt: skip
        ctx.shape, ctx.block_d, ctx.programs = shape, block_d, programs
        ctx.set_materialize_grads(False)  # no dh when h is not used: no zeros to add
        if inplace:
            ctx.mark_dirty(residual)
            h = residual
        else:
            h = h2.view(x.shape)
        # The returned h, not a view of it: autograd then checks h's version in backward (an
        # in-place h overwritten by the next layer's in-place add raises, not differentiates
        # the wrong values).
        ctx.save_for_backward(h, weight, rstd)
        return y.view(x.shape), h

    @staticmethod
    def backward(ctx, dy, dh):
        h, weight, rstd = ctx.saved_tensors
        h2 = _rows(h, ctx.shape)
        need_x, need_res, need_dw = ctx.needs_input_grad[:3]
        if dy is None:
            dx = dh
            dw = torch.zeros_like(weight) if need_dw else None
        else:
            g = k.backward(
                dy.contiguous().view(h2.shape), h2, _detach(weight), None, rstd, center=False,
                dout=dh.contiguous().view(h2.shape) if dh is not None else None,
                want_dx=need_x or need_res, want_dweight=need_dw, block_d=ctx.block_d,
                programs=ctx.programs,
            )  # fmt: skip
            dx = g.dx.view(dy.shape) if g.dx is not None else None
            dw = g.dweight.view(ctx.shape).to(weight.dtype) if need_dw else None
        # The same tensor for both inputs: autograd's AccumulateGrad copies a shared gradient
        # before accumulating into it, as for torch's own x + residual.
        return (
            (dx if need_x else None),
            (dx if need_res else None),
            dw,
            None,
            None,
            None,
            None,
            None,
        )


def layer_norm(
    input: torch.Tensor,
    normalized_shape: int | Sequence[int] | torch.Size,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    *,
    block_d: int | None = None,
    programs: int | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.layer_norm`` on the Triton kernels: y = (x - mean) / sqrt(var + eps)
    weight + bias over the trailing ``normalized_shape`` dimensions (biased variance).

    ``block_d`` (a power of two) caps the elements of a row per tile, forcing the multi-tile
    schedule (Chan-combined statistics, two passes, column-wise parameter gradients) on short
    rows; ``programs`` splits the backward's parameter-gradient reduction into that many ranges
    of rows. Both exist to verify the schedules a GPU takes at sizes the interpreter handles.
    """
    shape = _shape(normalized_shape)
    _check("LayerNorm", input, shape, {"weight": weight, "bias": bias})
    if bias is not None and weight is not None and bias.dtype != weight.dtype:
        raise TypeError(
            f"weight dtype {weight.dtype}, bias dtype {bias.dtype}: give both parameters one "
            f"dtype (the module's .to(dtype) does)"
        )
    k.row_config(1, 1, block_d=block_d, programs=programs)  # argument errors before any work
    return _NormFn.apply(input, weight, bias, shape, float(eps), True, block_d, programs)


def rms_norm(
    input: torch.Tensor,
    normalized_shape: int | Sequence[int] | torch.Size,
    weight: torch.Tensor | None = None,
    eps: float | None = None,
    *,
    block_d: int | None = None,
    programs: int | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.rms_norm`` on the Triton kernels: y = x / sqrt(mean(x^2) + eps)
    weight over the trailing ``normalized_shape`` dimensions. ``eps=None``:
    :func:`default_rms_eps`, as torch. ``block_d``, ``programs``: see :func:`layer_norm`."""
    shape = _shape(normalized_shape)
    _check("RMSNorm", input, shape, {"weight": weight})
    k.row_config(1, 1, block_d=block_d, programs=programs)
    e = default_rms_eps(input.dtype) if eps is None else float(eps)
    return _NormFn.apply(input, weight, None, shape, e, False, block_d, programs)


def add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    normalized_shape: int | Sequence[int] | torch.Size,
    weight: torch.Tensor | None = None,
    eps: float | None = None,
    *,
    inplace: bool = False,
    block_d: int | None = None,
    programs: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-norm residual step in one kernel: ``h = x + residual`` rounded to their dtype,
    ``y = rms_norm(h)``; returns ``(y, h)``. The statistics describe the rounded h, the tensor
    the next layer adds to (vLLM's ``fused_add_rms_norm``).

    ``inplace``: write h into ``residual`` (which must then be contiguous) and return it as h.
    Gradients: dx = dresidual = dh + (d rms_norm/dh)^T dy.
    """
    shape = _shape(normalized_shape)
    _check("RMSNorm", x, shape, {"weight": weight})
    if tuple(residual.shape) != tuple(x.shape) or residual.dtype != x.dtype:
        raise ValueError(
            f"residual of shape {tuple(residual.shape)} and dtype {residual.dtype} for x of shape "
            f"{tuple(x.shape)} and dtype {x.dtype}: the fused add needs the same shape and dtype "
            f"(h is stored in that dtype); convert or project the residual first"
        )
    if residual.device != x.device:
        raise ValueError(f"residual on {residual.device}, x on {x.device}: put both on one device")
    if inplace and residual.requires_grad and residual.is_leaf and torch.is_grad_enabled():
        # torch refuses this too, but only after forward has written: refuse before.
        raise RuntimeError(
            "inplace=True on a residual that is a leaf requiring grad: autograd cannot "
            "differentiate through overwriting it; use inplace=False (or pass a non-leaf)"
        )
    if inplace and not residual.is_contiguous():
        raise ValueError(
            "inplace=True writes h into residual, which is not contiguous: pass "
            "residual.contiguous() and keep that tensor, or use inplace=False"
        )
    k.row_config(1, 1, block_d=block_d, programs=programs)
    e = default_rms_eps(x.dtype) if eps is None else float(eps)
    return _AddRMSNormFn.apply(x, residual, weight, shape, e, bool(inplace), block_d, programs)


class TritonLayerNorm(torch.nn.LayerNorm):
    """Drop-in for ``torch.nn.LayerNorm`` on the Triton kernels (same constructor and state,
    ``bias=False`` and ``elementwise_affine=False`` included)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class TritonRMSNorm(torch.nn.RMSNorm):
    """Drop-in for ``torch.nn.RMSNorm`` on the Triton kernels (same constructor and state;
    ``eps=None`` is :func:`default_rms_eps` of the input, as torch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)


class TritonAddRMSNorm(TritonRMSNorm):
    """The fused pre-norm residual step: ``forward(x, residual) -> (rms_norm(h), h)`` with
    ``h = x + residual`` rounded to their dtype. Constructor of ``torch.nn.RMSNorm``, plus
    ``inplace`` (keyword only): write h into ``residual`` instead of a new tensor."""

    def __init__(self, *args, inplace: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.inplace = bool(inplace)

    def forward(  # type: ignore[override]  # two inputs, two outputs: not RMSNorm's forward
        self, x: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return add_rms_norm(
            x, residual, self.normalized_shape, self.weight, self.eps, inplace=self.inplace
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + (", inplace=True" if self.inplace else "")


__all__ = [
    "SUPPORTED_DTYPES",
    "TritonAddRMSNorm",
    "TritonLayerNorm",
    "TritonRMSNorm",
    "add_rms_norm",
    "default_rms_eps",
    "layer_norm",
    "rms_norm",
]

"""What every adapter shares: a case's values as the tensor a target receives, and back; the
drop-in contract on outputs; torch.compile without silent eager fallbacks."""

from __future__ import annotations

import numpy as np
import torch

from verify.targets.base import Target


class ContractViolation(RuntimeError):
    """The target broke the drop-in contract (shape, dtype, type of its output)."""


def expect_like(y, x, *, who: str) -> None:
    """A drop-in normalisation/activation returns a tensor of its input's shape and dtype."""
    if not isinstance(y, torch.Tensor):
        raise ContractViolation(f"{who} returned {type(y).__name__}, expected a torch.Tensor")
    if tuple(y.shape) != tuple(x.shape):
        raise ContractViolation(
            f"{who} returned shape {tuple(y.shape)} for input of shape "
            f"{tuple(x.shape)}; a drop-in must keep the shape"
        )
    if y.dtype != x.dtype:
        raise ContractViolation(
            f"{who} returned dtype {y.dtype} for {x.dtype} input; a drop-in "
            f"must return its input's dtype"
        )


def compiled(module: torch.nn.Module):
    """torch.compile(module), one wrapper per module object.

    Every case is a new shape and Dynamo, past its recompile limit (8), silently runs eager: lift
    the limit, and make hitting it an error, so compiled code is always what gets verified.
    """
    import torch._dynamo

    cfg = torch._dynamo.config
    for name in (
        "recompile_limit",
        "cache_size_limit",
        "accumulated_recompile_limit",
        "accumulated_cache_size_limit",
    ):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 100_000))
    if hasattr(cfg, "fail_on_recompile_limit_hit"):
        cfg.fail_on_recompile_limit_hit = True
    cached = getattr(module, "_varguard_compiled", None)
    if cached is None:
        cached = torch.compile(module, dynamic=False)
        object.__setattr__(module, "_varguard_compiled", cached)
    return cached


def as_run(target: Target, module: torch.nn.Module):
    """What ``target`` runs: ``module`` itself, or through torch.compile (:func:`compiled`)
    for a compiled target."""
    return compiled(module) if target.compile else module


def to_input(
    target: Target,
    values,
    *,
    layout: str | None = None,
    noncontiguous: bool = False,
    requires_grad: bool = False,
    dtype: torch.dtype | None = None,
    axis: int | None = None,
) -> torch.Tensor:
    """A case's values (a numpy array) as the tensor the target receives: its dtype, device and
    ``layout`` (verify.targets.variants.LAYOUTS; default: the target's memory format, or
    "strided" with ``noncontiguous``). An "expanded" layout repeats along ``axis``: the values
    must already be equal along it (the strategies make them so)."""
    if layout is None:
        layout = "strided" if noncontiguous else target.memory_format
    t = torch.from_numpy(np.ascontiguousarray(values)).to(
        device=target.device, dtype=dtype or target.torch_dtype
    )
    return with_layout(t, layout, axis=axis).requires_grad_(requires_grad)


def with_layout(t: torch.Tensor, layout: str, *, axis: int | None = None) -> torch.Tensor:
    """The same values as ``t``, laid out in memory as ``layout`` says."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
        if fmt is None:
            raise ValueError(f"layout='channels_last' needs a 4-D or 5-D tensor, not {t.dim()}-D")
        return t.contiguous(memory_format=fmt)
    if layout == "strided":
        # Every other element of a tensor twice as wide in its last dimension.
        wide = torch.zeros((*t.shape[:-1], 2 * t.shape[-1]), dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        return wide[..., ::2]
    if layout == "expanded":
        if axis is None:
            raise ValueError("layout='expanded' needs the axis its values repeat along")
        return t.narrow(axis, 0, 1).expand(t.shape)  # stride 0 along axis
    if layout == "offset":
        # A view that starts one element into its storage: misaligned for vector loads.
        flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
        view = flat[1:].view(t.shape)
        view.copy_(t)
        return view
    raise ValueError(f"layout={layout!r}: use contiguous, channels_last, strided, expanded, offset")


def layout_of(t: torch.Tensor) -> str:
    """How ``t`` lies in memory: "contiguous", "channels_last", "dense" (no gaps, no overlaps,
    some other order), or "non-dense" with its strides."""
    if t.is_contiguous():
        return "contiguous"
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
    if fmt is not None and t.is_contiguous(memory_format=fmt):
        return "channels_last"
    if _dense(t):
        return f"dense (strides {tuple(t.stride())})"
    return f"non-dense (strides {tuple(t.stride())})"


def _dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense: the strides, sorted, are those of some permutation of a
    contiguous tensor (size-1 dimensions aside)."""
    expected = 1
    dims = sorted(((st, s) for s, st in zip(t.shape, t.stride(), strict=True) if s != 1))
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def as_numpy(t: torch.Tensor | None):
    """A tensor as a float64 numpy array on the CPU (None stays None)."""
    return None if t is None else t.detach().to("cpu", torch.float64).numpy()

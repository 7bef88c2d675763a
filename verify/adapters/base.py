"""What every adapter shares: a case's values as the tensor a target receives, and back; the
drop-in contract on outputs; torch.compile without silent eager fallbacks."""

from __future__ import annotations

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


def to_input(
    target: Target, values, *, noncontiguous: bool = False, requires_grad: bool = False
) -> torch.Tensor:
    """A case's values (a numpy array) as the tensor the target receives: dtype, device,
    layout, strides."""
    t = torch.from_numpy(values).to(device=target.device, dtype=target.torch_dtype)
    if target.memory_format == "channels_last" and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    if noncontiguous:
        # Same values, strided storage: every other element of a tensor twice as wide.
        wide = torch.zeros((*t.shape[:-1], 2 * t.shape[-1]), dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        t = wide[..., ::2]
    return t.requires_grad_(requires_grad)


def as_numpy(t: torch.Tensor | None):
    """A tensor as a float64 numpy array on the CPU (None stays None)."""
    return None if t is None else t.detach().to("cpu", torch.float64).numpy()

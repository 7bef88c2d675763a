"""What a target is: a real implementation behind one small adapter, and where it can run."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from verify.families import FAMILIES


@dataclass(frozen=True)
class KnownDefect:
    """A defect of the implementation itself, found by varguard, not a fault of the suite.

    The search steps around the cases it ``matches`` so that it cannot mask other failures, and
    every run measures its ``example`` again and reports whether it is still present.
    """

    checks: tuple[str, ...]
    description: str
    matches: Callable[[Any], bool]
    example: Any


@dataclass(frozen=True)
class Target:
    """An implementation under test.

    ``factory`` is family-specific: for ``batchnorm`` a drop-in for ``torch.nn.BatchNorm2d``'s
    constructor; for ``init`` a function ``(tensor, **kw)`` like ``torch.nn.init.xavier_uniform_``;
    for ``selu`` a module class; for ``residual`` a block constructor. The remaining fields say how
    the adapter calls it (dtype, memory layout, autocast, torch.compile, device) and what it
    needs to run at all.
    """

    name: str
    family: str
    factory: Callable[..., Any]
    description: str = ""
    dtype: str = "float32"
    memory_format: str = "contiguous"  # or "channels_last"
    autocast: str | None = None  # dtype name autocast runs in, if any
    compile: bool = False
    device: str = "cpu"
    # "train" targets are checked in training and eval mode; "eval" ones (conv-BN folding)
    # exist only for inference.
    modes: tuple[str, ...] = ("train", "eval")
    requires: tuple[str, ...] = ()  # "cuda", "triton", "compile", "multi-gpu"
    known_defects: tuple[KnownDefect, ...] = ()
    # A cap on one case's element count below the profile's, for slow targets (an interpreted
    # kernel): the search keeps its breadth, only the largest sizes are left out.
    max_elements: int | None = None
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"Target {self.name!r}: family={self.family!r}, use one of {FAMILIES}")

    def unavailable(self) -> str | None:
        """Why this target cannot run on this machine, or None if it can."""
        for need in self.requires:
            reason = _REQUIREMENTS[need]()
            if reason:
                return reason
        return None

    def autocast_context(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=getattr(torch, self.autocast))

    def size_budget(self, profile_max: int) -> int:
        return min(profile_max, self.max_elements or profile_max)

    def defects_for(self, check: str) -> tuple[KnownDefect, ...]:
        return tuple(d for d in self.known_defects if check in d.checks)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


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


def _need_cuda() -> str | None:
    return None if torch.cuda.is_available() else "needs a CUDA GPU; none on this machine"


def _need_multi_gpu() -> str | None:
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return "needs two or more CUDA GPUs"
    return None


def _need_triton() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "needs triton (pip install 'varguard[triton]')"
    return None


def _need_compile() -> str | None:
    # Inductor's CPU backend compiles C++; without a compiler torch.compile cannot run.
    import shutil

    if not torch.cuda.is_available() and not (shutil.which("g++") or shutil.which("c++")):
        return "torch.compile on CPU needs a C++ compiler (g++); none found"
    return None


_REQUIREMENTS: dict[str, Callable[[], str | None]] = {
    "cuda": _need_cuda,
    "multi-gpu": _need_multi_gpu,
    "triton": _need_triton,
    "compile": _need_compile,
}


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

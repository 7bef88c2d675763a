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
    memory_format: str = "contiguous"  # or "channels_last": the dense layout of its inputs
    # The input layouts its cases draw (verify.targets.variants.LAYOUTS); empty: all of them.
    layouts: tuple[str, ...] = ()
    # The input ranks it takes (batch norm: 2 or 3 for BatchNorm1d, 4 for 2d, 5 for 3d).
    ranks: tuple[int, ...] = (4,)
    autocast: str | None = None  # dtype name autocast runs in, if any
    compile: bool = False
    device: str = "cpu"
    # "train" targets are checked in training and eval mode; "eval" ones (conv-BN folding)
    # exist only for inference.
    modes: tuple[str, ...] = ("train", "eval")
    requires: tuple[str, ...] = ()  # "cuda", "triton", "compile", "multi-gpu"
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

    def runs_on(self, device: str) -> bool:
        """Whether this target exercises ``device`` ("cpu", "cuda"): its tensors live there, or
        it is a Triton kernel, which runs natively on CUDA (here only under the interpreter)."""
        native = self.device.split(":")[0] == device
        return native or (device == "cuda" and "triton" in self.requires)

    def autocast_context(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=getattr(torch, self.autocast))

    def size_budget(self, profile_max: int) -> int:
        return min(profile_max, self.max_elements or profile_max)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


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

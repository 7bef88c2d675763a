"""What a family's benchmark declares, as plain data (no torch): its operations with the checks
each rests on and the bytes each must move, the sizes of real networks it is timed at, and how
its module is built. Each family's module in this package holds one :class:`FamilyBench`.

The report and the command-line parser read these; the callables that are timed live in
:mod:`verify.bench.callables` (torch), named here by an operation's ``kind``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: Parameters and saved statistics are float32 whatever the activation dtype (mixed precision):
#: what every kernel here keeps them in, and what a minimum byte count assumes.
PARAM_BYTES = 4
#: Bytes per element of the activation dtypes a target can have (torch-free: the report and
#: the parser read the byte counts without importing torch).
ELEMENT_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}

#: A size's first dimension (batch, or tokens) on the CPU: the GPU's divided by these, at least
#: MIN_LEAD, so that a CPU run takes seconds per case, not minutes (batch norm: 32 -> 8 -> 2).
CPU_DIVISOR, QUICK_CPU_DIVISOR, MIN_LEAD = 4, 16, 2

Shape = tuple[int, ...]


def element_size(dtype: str) -> int:
    try:
        return ELEMENT_BYTES[dtype]
    except KeyError:
        raise ValueError(f"dtype={dtype!r} has no byte size here; use one of "
                         f"{sorted(ELEMENT_BYTES)}") from None  # fmt: skip


def activation_bytes(shape: Iterable[int], dtype: str) -> int:
    """Bytes of one activation tensor of ``shape`` in ``dtype``."""
    return math.prod(int(s) for s in shape) * element_size(dtype)


def float32_params(target) -> str:
    """Parameters in float32 (float64 for a float64 target): batch norm's, whose running
    statistics stay float32 under mixed precision."""
    return "float64" if target.dtype == "float64" else "float32"


def params_like_input(target) -> str:
    """Parameters in the activations' dtype, as in a model cast to it, unless the target says
    its parameters are float32 (autocast: mixed precision). torch's fused eager kernels need
    that: a bfloat16 RMSNorm with a float32 weight falls back to op-by-op code."""
    return target.options.get("param_dtypes", (target.dtype,))[0]


@dataclass(frozen=True)
class Op:
    """One timed operation of a family."""

    name: str  # "fwd-train", ...: shared across families where the meaning is (--op)
    what: str  # one line for the report
    kind: str  # the callable timed: a key of verify.bench.callables.KINDS
    checks: tuple[str, ...]  # the checks its results rest on (all must have passed)
    # (shape, activation dtype) -> the bytes an ideal kernel moves (see the family's module).
    min_bytes: Callable[[Shape, str], int]
    training: bool = True  # needs a target that exists for training (not inference-only)


@dataclass(frozen=True)
class Size:
    """A size of a real network, as a GPU would run it (the first dimension shrinks on a CPU)."""

    label: str  # the layer or model it comes from
    shape: Shape
    quick: bool = False  # one of the few `--quick` times


@dataclass(frozen=True)
class FamilyBench:
    """A family's benchmark: discovered from ``BENCH`` in verify/bench/families/<family>.py."""

    family: str
    axes: str  # the shape's dimensions, for the report: "N, C, H, W"
    size_column: str  # what a size's label names: "layer", "model"
    ops: tuple[Op, ...]
    sizes: tuple[Size, ...]
    ranks: tuple[int, ...]  # the ranks of the shapes its ops take (--size)
    # (the target's factory, shape) -> the module timed, built as the family's drop-in base is.
    module: Callable[[Callable[..., Any], Shape], Any]
    # The dtype its module's parameters are timed in (the byte counts take float32 whatever
    # it is: a 16-bit weight moves 2 bytes less per value, well under 1% of any size here).
    param_dtype: Callable[[Any], str] = float32_params
    # Why a target of the family is not timed (None: it is), before any check is looked at.
    applies: Callable[[Any], str | None] = field(default=lambda target: None)
    # Further (target, check) pairs an operation rests on for some targets (a fused kernel
    # verified through what is built on it).
    evidence: Callable[[Any, str], list[tuple[str, str]]] = field(default=lambda target, op: [])

    def op(self, name: str) -> Op:
        for o in self.ops:
            if o.name == name:
                return o
        raise ValueError(f"op={name!r}: {self.family} times {', '.join(self.op_names)}")

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.ops)

    def min_bytes(self, op: str, shape: Iterable[int], dtype: str) -> int:
        return self.op(op).min_bytes(tuple(int(s) for s in shape), dtype)

    def shapes(self, *, device: str, quick: bool, lead: int | None = None) -> list[Shape]:
        """The sizes to time: all of them, or the ``quick`` few; the first dimension ``lead``
        if given, else the GPU's, divided on a CPU (CPU_DIVISOR, QUICK_CPU_DIVISOR)."""
        out = []
        for s in self.sizes:
            if quick and not s.quick:
                continue
            first = s.shape[0]
            if lead is not None:
                first = lead
            elif device != "cuda":
                first = max(MIN_LEAD, first // (QUICK_CPU_DIVISOR if quick else CPU_DIVISOR))
            out.append((first, *s.shape[1:]))
        return out

    def label(self, shape: Iterable[int]) -> str:
        """The layer or model a shape comes from (matched on all but the first dimension)."""
        rest = tuple(int(s) for s in shape)[1:]
        return next((s.label for s in self.sizes if s.shape[1:] == rest), "custom")

    def order(self, shape: Iterable[int]) -> tuple:
        """Sort key of a shape in the report: declared sizes in their order (the network's),
        other shapes after them, smaller first."""
        shape = tuple(int(s) for s in shape)
        index = next(
            (i for i, s in enumerate(self.sizes) if s.shape[1:] == shape[1:]), len(self.sizes)
        )
        return (index, math.prod(shape), shape)


__all__ = [
    "CPU_DIVISOR",
    "ELEMENT_BYTES",
    "MIN_LEAD",
    "PARAM_BYTES",
    "QUICK_CPU_DIVISOR",
    "FamilyBench",
    "Op",
    "Size",
    "activation_bytes",
    "element_size",
    "float32_params",
    "params_like_input",
]

"""Variants of a drop-in: the same class, checked in every dtype, input layout and device it
claims to support, each with its own results (``pkg.mod:MyBN[float16, channels_last]``).

A family says what a user's class can be a drop-in for with :class:`DropIn` declarations in its
targets module (``DROP_INS``); a class says what it supports with class attributes
(``varguard_dtypes``, ``varguard_layouts``, ``varguard_devices``), and the command line narrows
that further (``--dtype``, ``--layout``, ``--device``). A variant the class refuses with a clear
exception (NotImplementedError, or an error naming the dtype or layout) is skipped with that
reason, never counted as passed (:func:`refusal`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch

from verify.dimensions import DEVICES, DTYPES, LAYOUT_VARIANTS, LAYOUTS
from verify.targets.base import Target


@dataclass(frozen=True)
class DropIn:
    """A torch module a user's class can replace: matched by subclass, or named by --family."""

    family: str
    base: type  # e.g. torch.nn.BatchNorm2d
    ranks: tuple[int, ...]  # the input ranks that module takes
    # Builds one instance with the base's constructor arguments: raises if ``cls`` cannot be
    # a drop-in at all (its constructor refuses them), before any check runs.
    probe: Callable[[type], object]
    # Families whose cases give the parameters a dtype of their own (float32 beside half
    # activations): an input shape the probe's instance takes, to try that pairing once.
    parameter_dtype_input: tuple[int, ...] | None = None

    @property
    def layouts(self) -> tuple[str, ...]:
        """The layout variants that apply: channels_last only for 4-D and 5-D input."""
        return tuple(
            v for v in LAYOUT_VARIANTS if v != "channels_last" or any(r >= 4 for r in self.ranks)
        )

    @property
    def title(self) -> str:
        return f"{self.base.__module__}.{self.base.__qualname__}"


@dataclass(frozen=True)
class Choice:
    """What a run asks of a drop-in's variants (None: everything the class declares)."""

    dtypes: tuple[str, ...] | None = None
    layouts: tuple[str, ...] | None = None
    device: str = "cpu"


_VARIANT = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<inside>[^\[\]]*)\]$")


def parse(spec: str) -> tuple[str, dict[str, str]]:
    """``pkg.mod:MyBN[float16, channels_last, cuda]`` -> (``pkg.mod:MyBN``, {dtype, layout,
    device}); a spec without brackets -> (spec, {})."""
    m = _VARIANT.match(spec.strip())
    if not m:
        if "[" in spec or "]" in spec:
            raise ValueError(
                f"target={spec!r}: write a variant as module:Name[dtype, layout], e.g. "
                f"mylib:MyBN[float16, channels_last]"
            )
        return spec.strip(), {}
    fields: dict[str, str] = {}
    for word in (w.strip() for w in m["inside"].split(",") if w.strip()):
        kind = "dtype" if word in DTYPES else "layout" if word in LAYOUT_VARIANTS else None
        kind = kind or ("device" if word in DEVICES else None)
        if kind is None or kind in fields:
            raise ValueError(
                f"target={spec!r}: {word!r} in the brackets is not a dtype ({', '.join(DTYPES)}), "
                f"a layout ({', '.join(LAYOUT_VARIANTS)}) or a device ({', '.join(DEVICES)}), "
                f"or it repeats one"
            )
        fields[kind] = word
    return m["base"].strip(), fields


def name(base: str, *, dtype: str, layout: str, device: str = "cpu") -> str:
    device_part = f", {device}" if device != "cpu" else ""
    return f"{base}[{dtype}, {layout}{device_part}]"


def declared(cls: type, attribute: str, allowed: Iterable[str]) -> tuple[str, ...]:
    """What the class declares it supports (a class attribute), within ``allowed``."""
    allowed = tuple(allowed)
    value = getattr(cls, attribute, None)
    if value is None:
        return allowed
    values = (value,) if isinstance(value, str) else tuple(value)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(
            f"{cls.__qualname__}.{attribute} = {value!r}: {unknown} are not among {allowed}"
        )
    return tuple(v for v in allowed if v in values)


def variant(template: Target, *, dtype: str, layout: str, device: str = "cpu") -> Target:
    """The template (a drop-in class in float32 on the CPU) in one dtype, layout and device."""
    base = template.options.get("spec", template.name)
    requires = template.requires + (("cuda",) if device == "cuda" else ())
    made = replace(
        template,
        name=name(base, dtype=dtype, layout=layout, device=device),
        dtype=dtype,
        layouts=LAYOUT_VARIANTS[layout],
        memory_format="channels_last" if layout == "channels_last" else "contiguous",
        device=device,
        requires=requires,
        options={**template.options, "variant": {"dtype": dtype, "layout": layout}},
    )
    if _same_dtype_parameters_only(made):
        made = replace(made, options={**made.options, "param_dtypes": (dtype,)})
    return made


def _same_dtype_parameters_only(target: Target) -> bool:
    """Whether a half-precision variant's class refuses float32 parameters beside its
    activations, naming the dtype, and takes parameters in the activations' own dtype (torch's
    CUDA LayerNorm and GroupNorm: "expected scalar type BFloat16 but found Float"). Its cases
    then give it those: read as a refusal of the dtype, the first case's float32 parameters
    skipped 7 of 9 checks of torch.nn:LayerNorm[bfloat16, *, cuda] on an H200. The
    param_dtypes check still tries every pairing and records the refusal."""
    drop_in = target.options.get("drop_in")
    shape = getattr(drop_in, "parameter_dtype_input", None)
    if shape is None or target.dtype not in ("float16", "bfloat16") or target.unavailable():
        return False
    half = getattr(torch, target.dtype)

    def call(parameters: torch.dtype) -> None:
        module = drop_in.probe(target.factory).to(device=target.device, dtype=parameters)
        with torch.no_grad():
            module(torch.ones(shape, device=target.device).to(half))

    try:
        call(torch.float32)
        return False
    except (TypeError, RuntimeError, ValueError) as exc:
        if refusal(exc, target) is None:
            return False  # a failure of the target: the checks report it
    try:
        call(half)
    except Exception:
        return False
    return True


def expand(template: Target, choice: Choice) -> list[Target]:
    """Every variant of a drop-in that both the class and the run ask for."""
    cls = template.factory
    drop_in: DropIn = template.options["drop_in"]
    dtypes = declared(cls, "varguard_dtypes", DTYPES)
    layouts = declared(cls, "varguard_layouts", drop_in.layouts)
    devices = declared(cls, "varguard_devices", DEVICES)
    if choice.dtypes is not None:
        dtypes = tuple(d for d in dtypes if d in choice.dtypes)
    if choice.layouts is not None:
        layouts = tuple(v for v in layouts if v in choice.layouts)
    if choice.device not in devices:
        return []
    return [
        variant(template, dtype=d, layout=v, device=choice.device) for d in dtypes for v in layouts
    ]


#: Words by which an error names a dtype or a layout (torch spells dtypes several ways).
_NAMES = {
    "float16": ("float16", "half", "fp16"),
    "bfloat16": ("bfloat16", "bf16"),
    "float64": ("float64", "double", "fp64"),
    "float32": ("float32", "fp32"),
    "channels_last": ("channels_last", "channels last", "memory format", "memory_format"),
    "strided": ("contiguous", "stride", "strided", "view"),
}


def refusal(exc: BaseException, target: Target) -> str | None:
    """Why ``target`` (a variant) does not run at all, if ``exc`` says so clearly: a
    NotImplementedError, or a TypeError/RuntimeError/ValueError naming the variant's dtype or
    layout. None for anything else (that is an error of the target, reported as one)."""
    chosen = target.options.get("variant")
    if not chosen:
        return None
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if isinstance(exc, NotImplementedError):
        return f"refused by the target: {text}"
    if not isinstance(exc, (TypeError, RuntimeError, ValueError)):
        return None
    lower = str(exc).lower()
    for key in (chosen["dtype"], chosen["layout"]):
        if any(word in lower for word in _NAMES.get(key, ())):
            return f"refused by the target ({key}): {text}"
    return None


__all__ = [
    "DEVICES",
    "DTYPES",
    "LAYOUTS",
    "LAYOUT_VARIANTS",
    "Choice",
    "DropIn",
    "declared",
    "expand",
    "name",
    "parse",
    "refusal",
    "variant",
]

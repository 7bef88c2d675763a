"""Pre-norm residual tail targets: ``forward(x, residual) -> (y, residual_out)``, the step
``residual += x; y = norm(residual)`` of a pre-norm transformer block that fused kernels (vLLM's
``fused_add_rms_norm``, Apex, Liger-Kernel) compute in one pass.

torch has no fused add + norm, so its built-in targets are the composition a model writes,
:class:`AddRMSNorm` and :class:`AddLayerNorm` (eager, compiled, under autocast), which define the
semantics every fused kernel must keep: residual_out is x + residual rounded to the activations'
dtype, and y is the norm of that rounded stream. ``options["norm"]`` says which norm follows
the add ("rms" when absent); a user's class is a drop-in for :class:`AddRMSNorm` (the
constructor of torch.nn.RMSNorm) or :class:`AddLayerNorm` (that of torch.nn.LayerNorm).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from verify.strategies.rows import ROW_RANKS
from verify.targets.base import Target
from verify.targets.explicit_norms import ExplicitAddRMSNorm
from verify.targets.layernorm import INTERPRETER_CAP
from verify.targets.variants import DropIn


class AddRMSNorm(torch.nn.RMSNorm):
    """``h = x + residual; return rms_norm(h), h`` in torch ops (constructor of RMSNorm)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor):  # type: ignore[override]
        h = x + residual
        return F.rms_norm(h, self.normalized_shape, self.weight, self.eps), h


class AddLayerNorm(torch.nn.LayerNorm):
    """``h = x + residual; return layer_norm(h), h`` in torch ops (constructor of LayerNorm)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor):  # type: ignore[override]
        h = x + residual
        return F.layer_norm(h, self.normalized_shape, self.weight, self.bias, self.eps), h


def _probe_rms(cls: type) -> torch.nn.Module:
    return cls(8, eps=1e-6, elementwise_affine=True)


def _probe_layer(cls: type) -> torch.nn.Module:
    return cls(8, eps=1e-5, elementwise_affine=True, bias=True)


#: What a user's fused tail can be a drop-in for. A class that subclasses neither (a kernel
#: wrapped in a plain nn.Module) is taken for an add + RMSNorm with --family prenorm.
DROP_INS = (
    DropIn(family="prenorm", base=AddRMSNorm, ranks=ROW_RANKS, probe=_probe_rms),
    DropIn(family="prenorm", base=AddLayerNorm, ranks=ROW_RANKS, probe=_probe_layer),
)


def triton_add_rms_norm(*args, **kwargs) -> torch.nn.Module:
    """``TritonAddRMSNorm(*args, **kwargs)`` (triton imported when the first one is built)."""
    from verify.kernels.norms import TritonAddRMSNorm

    return TritonAddRMSNorm(*args, **kwargs)


def builtin() -> list[Target]:
    t = functools.partial(Target, family="prenorm", ranks=ROW_RANKS)
    layer = {"norm": "layer"}
    gpu = torch.cuda.is_available()
    where = "native on CUDA" if gpu else "TRITON_INTERPRET=1 on the CPU"
    triton = functools.partial(
        t,
        factory=triton_add_rms_norm,
        device="cuda" if gpu else "cpu",
        requires=("triton",),
        max_elements=None if gpu else INTERPRETER_CAP,
    )
    return [
        t(
            name="torch-add-rmsnorm",
            factory=AddRMSNorm,
            description="x + residual, then F.rms_norm, in torch ops, float32",
        ),
        *(
            t(
                name=f"torch-add-rmsnorm-{dtype}",
                factory=AddRMSNorm,
                dtype=dtype,
                description=f"x + residual, then F.rms_norm, {dtype} activations",
            )
            for dtype in ("bfloat16", "float16")
        ),
        t(
            name="torch-add-rmsnorm-compile",
            factory=AddRMSNorm,
            compile=True,
            requires=("compile",),
            description="torch.compile of x + residual then rms_norm (Inductor fuses the add "
            "into the norm), float32",
        ),
        t(
            name="torch-add-rmsnorm-autocast-bf16",
            factory=AddRMSNorm,
            dtype="bfloat16",
            autocast="bfloat16",
            options={"param_dtypes": ("float32",)},
            description="x + residual, then rms_norm, bfloat16 activations under torch.autocast",
        ),
        t(
            name="torch-add-layernorm",
            factory=AddLayerNorm,
            options=layer,
            description="x + residual, then F.layer_norm, in torch ops, float32",
        ),
        t(
            name="torch-add-layernorm-bfloat16",
            factory=AddLayerNorm,
            dtype="bfloat16",
            options=layer,
            description="x + residual, then F.layer_norm, bfloat16 activations",
        ),
        t(
            name="varguard-explicit-add-rmsnorm",
            factory=ExplicitAddRMSNorm,
            description="add + RMSNorm op by op (the mutants' correct base), float32",
        ),
        *(
            t(
                name=f"varguard-explicit-add-rmsnorm-{dtype}",
                factory=ExplicitAddRMSNorm,
                dtype=dtype,
                description=f"the op-by-op add + RMSNorm on {dtype} activations",
            )
            for dtype in ("bfloat16", "float16")
        ),
        triton(
            name="triton-add-rmsnorm",
            description=f"Triton fused residual add + RMSNorm, float32 ({where})",
        ),
        *(
            triton(
                name=f"triton-add-rmsnorm-{dtype}",
                dtype=dtype,
                description=f"Triton fused residual add + RMSNorm, {dtype} activations ({where})",
            )
            for dtype in ("bfloat16", "float16")
        ),
        triton(
            name="triton-add-rmsnorm-inplace-bfloat16",
            factory=functools.partial(triton_add_rms_norm, inplace=True),
            dtype="bfloat16",
            options={"inplace": True},
            description=f"Triton fused add + RMSNorm writing the stream into residual "
            f"(residual += x), bfloat16 ({where})",
        ),
        # GPU-only: skipped with their reason where there is no CUDA device.
        *(
            t(
                name=f"cuda-add-rmsnorm-{dtype}",
                factory=AddRMSNorm,
                dtype=dtype,
                device="cuda",
                requires=("cuda",),
                description=f"x + residual, then rms_norm, on CUDA, {dtype}",
            )
            for dtype in ("float32", "bfloat16", "float16")
        ),
        t(
            name="cuda-add-rmsnorm-compile",
            factory=AddRMSNorm,
            compile=True,
            device="cuda",
            requires=("cuda", "compile"),
            description="torch.compile of add + rms_norm on CUDA (one fused Triton kernel)",
        ),
    ]


__all__ = [
    "DROP_INS",
    "AddLayerNorm",
    "AddRMSNorm",
    "builtin",
    "triton_add_rms_norm",
]

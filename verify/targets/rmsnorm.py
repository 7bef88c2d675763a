"""RMSNorm targets: the catalog, and what a user's RMSNorm class can be a drop-in for.

Every RMSNorm target is a drop-in for ``torch.nn.RMSNorm``: same constructor (normalized_shape,
eps, elementwise_affine; eps=None is torch's finfo(opmath type).eps), same forward.
verify.adapters.rmsnorm runs any of them on a case.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from verify.strategies.rows import ROW_RANKS
from verify.targets.base import Target
from verify.targets.explicit_norms import ExplicitRMSNorm
from verify.targets.layernorm import INTERPRETER_CAP
from verify.targets.variants import DropIn


def _probe(cls: type) -> torch.nn.Module:
    """torch.nn.RMSNorm's constructor arguments, all by keyword after the first."""
    return cls(8, eps=None, elementwise_affine=True)


#: What a user's class can be a drop-in for: torch.nn.RMSNorm (or, with --family rmsnorm, any
#: module with its constructor).
DROP_INS = (
    DropIn(
        family="rmsnorm",
        base=torch.nn.RMSNorm,
        ranks=ROW_RANKS,
        probe=_probe,
        parameter_dtype_input=(2, 8),
    ),
)


class FunctionalRMSNorm(torch.nn.RMSNorm):
    """torch.nn.functional.rms_norm called directly, the module only holding the weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)


def triton_rms_norm(*args, **kwargs) -> torch.nn.Module:
    """``TritonRMSNorm(*args, **kwargs)``: torch.nn.RMSNorm's constructor (triton imported when
    the first module is built)."""
    from verify.kernels.norms import TritonRMSNorm

    return TritonRMSNorm(*args, **kwargs)


def builtin() -> list[Target]:
    rms = torch.nn.RMSNorm
    t = functools.partial(Target, family="rmsnorm", ranks=ROW_RANKS)
    gpu = torch.cuda.is_available()
    where = "native on CUDA" if gpu else "TRITON_INTERPRET=1 on the CPU"
    triton = functools.partial(
        t,
        factory=triton_rms_norm,
        device="cuda" if gpu else "cpu",
        requires=("triton",),
        max_elements=None if gpu else INTERPRETER_CAP,
    )
    return [
        t(name="torch-rmsnorm", factory=rms, description="torch.nn.RMSNorm, float32"),
        t(
            name="torch-rmsnorm-float64",
            factory=rms,
            dtype="float64",
            description="torch.nn.RMSNorm in float64",
        ),
        *(
            t(
                name=f"torch-rmsnorm-{dtype}",
                factory=rms,
                dtype=dtype,
                description=f"torch.nn.RMSNorm on {dtype} input, float32 or {dtype} weight",
            )
            for dtype in ("bfloat16", "float16")
        ),
        t(
            name="torch-rmsnorm-functional",
            factory=FunctionalRMSNorm,
            description="torch.nn.functional.rms_norm, float32",
        ),
        t(
            name="torch-rmsnorm-compile",
            factory=rms,
            compile=True,
            requires=("compile",),
            description="torch.compile(RMSNorm) (Inductor: C++ on CPU, Triton on GPU), float32",
        ),
        t(
            name="torch-rmsnorm-autocast-bf16",
            factory=rms,
            dtype="bfloat16",
            autocast="bfloat16",
            options={"param_dtypes": ("float32",)},
            description="bfloat16 input under torch.autocast (CPU), float32 weight",
        ),
        t(
            name="varguard-explicit-rmsnorm",
            factory=ExplicitRMSNorm,
            description="RMSNorm op by op (the mutants' correct base), float32",
        ),
        *(
            t(
                name=f"varguard-explicit-rmsnorm-{dtype}",
                factory=ExplicitRMSNorm,
                dtype=dtype,
                description=f"the op-by-op RMSNorm on {dtype} input",
            )
            for dtype in ("bfloat16", "float16")
        ),
        triton(name="triton-rmsnorm", description=f"Triton RMSNorm, float32 ({where})"),
        *(
            triton(
                name=f"triton-rmsnorm-{dtype}",
                dtype=dtype,
                description=f"Triton RMSNorm, {dtype} input, float32 statistics ({where})",
            )
            for dtype in ("bfloat16", "float16")
        ),
        # GPU-only: skipped with their reason where there is no CUDA device.
        t(
            name="cuda-rmsnorm",
            factory=rms,
            device="cuda",
            requires=("cuda",),
            description="torch.nn.RMSNorm on CUDA, float32",
        ),
        *(
            t(
                name=f"cuda-rmsnorm-{dtype}",
                factory=rms,
                dtype=dtype,
                device="cuda",
                requires=("cuda",),
                description=f"torch.nn.RMSNorm on CUDA, {dtype} input",
            )
            for dtype in ("bfloat16", "float16")
        ),
        t(
            name="cuda-rmsnorm-autocast-fp16",
            factory=rms,
            dtype="float16",
            autocast="float16",
            device="cuda",
            requires=("cuda",),
            options={"param_dtypes": ("float32",)},
            description="float16 input under CUDA autocast",
        ),
        t(
            name="cuda-rmsnorm-compile",
            factory=rms,
            compile=True,
            device="cuda",
            requires=("cuda", "compile"),
            description="torch.compile(RMSNorm) on CUDA (Inductor's Triton kernels)",
        ),
    ]


__all__ = ["DROP_INS", "FunctionalRMSNorm", "builtin", "triton_rms_norm"]

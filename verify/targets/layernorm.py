"""LayerNorm targets: the catalog, and what a user's LayerNorm class can be a drop-in for.

Every LayerNorm target is a drop-in for ``torch.nn.LayerNorm``: same constructor
(normalized_shape, eps, elementwise_affine, bias), same forward. verify.adapters.layernorm runs
any of them on a case.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from verify.strategies.rows import ROW_RANKS
from verify.targets.base import Target
from verify.targets.explicit_norms import ExplicitLayerNorm
from verify.targets.variants import DropIn

#: The element cap of the Triton kernels under the interpreter (numpy, one program at a time):
#: the quick profile's budget, as for the batch-norm kernels (verify/targets/triton.py).
INTERPRETER_CAP = 20_000


def _probe(cls: type) -> torch.nn.Module:
    """torch.nn.LayerNorm's constructor arguments, all by keyword after the first."""
    return cls(8, eps=1e-5, elementwise_affine=True, bias=True)


#: What a user's class can be a drop-in for: torch.nn.LayerNorm (or, with --family layernorm,
#: any module with its constructor).
DROP_INS = (
    DropIn(
        family="layernorm",
        base=torch.nn.LayerNorm,
        ranks=ROW_RANKS,
        probe=_probe,
        parameter_dtype_input=(2, 8),
    ),
)


class FunctionalLayerNorm(torch.nn.LayerNorm):
    """torch.nn.functional.layer_norm called directly, the module only holding the parameters."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


def triton_layer_norm(*args, **kwargs) -> torch.nn.Module:
    """``TritonLayerNorm(*args, **kwargs)``: torch.nn.LayerNorm's constructor. Imports triton
    when the first module is built, not when the catalog is listed."""
    from verify.kernels.norms import TritonLayerNorm

    return TritonLayerNorm(*args, **kwargs)


def builtin() -> list[Target]:
    ln = torch.nn.LayerNorm
    t = functools.partial(Target, family="layernorm", ranks=ROW_RANKS)
    gpu = torch.cuda.is_available()
    where = "native on CUDA" if gpu else "TRITON_INTERPRET=1 on the CPU"
    triton = functools.partial(
        t,
        factory=triton_layer_norm,
        device="cuda" if gpu else "cpu",
        requires=("triton",),
        max_elements=None if gpu else INTERPRETER_CAP,
    )
    return [
        t(name="torch-layernorm", factory=ln, description="torch.nn.LayerNorm, float32"),
        t(
            name="torch-layernorm-float64",
            factory=ln,
            dtype="float64",
            description="torch.nn.LayerNorm in float64",
        ),
        *(
            t(
                name=f"torch-layernorm-{dtype}",
                factory=ln,
                dtype=dtype,
                description=f"torch.nn.LayerNorm on {dtype} input, float32 or {dtype} parameters",
            )
            for dtype in ("bfloat16", "float16")
        ),
        t(
            name="torch-layernorm-functional",
            factory=FunctionalLayerNorm,
            description="torch.nn.functional.layer_norm, float32",
        ),
        t(
            name="torch-layernorm-compile",
            factory=ln,
            compile=True,
            requires=("compile",),
            description="torch.compile(LayerNorm) (Inductor: C++ on CPU, Triton on GPU), float32",
        ),
        t(
            name="torch-layernorm-autocast-bf16",
            factory=ln,
            dtype="bfloat16",
            autocast="bfloat16",
            options={"param_dtypes": ("float32",)},
            description="bfloat16 input under torch.autocast (CPU), float32 parameters",
        ),
        t(
            name="varguard-explicit-layernorm",
            factory=ExplicitLayerNorm,
            description="layer norm op by op (the mutants' correct base), float32",
        ),
        *(
            t(
                name=f"varguard-explicit-layernorm-{dtype}",
                factory=ExplicitLayerNorm,
                dtype=dtype,
                description=f"the op-by-op layer norm on {dtype} input",
            )
            for dtype in ("bfloat16", "float16")
        ),
        triton(name="triton-layernorm", description=f"Triton LayerNorm, float32 ({where})"),
        *(
            triton(
                name=f"triton-layernorm-{dtype}",
                dtype=dtype,
                description=f"Triton LayerNorm, {dtype} input, float32 statistics ({where})",
            )
            for dtype in ("bfloat16", "float16")
        ),
        # GPU-only: skipped with their reason where there is no CUDA device.
        t(
            name="cuda-layernorm",
            factory=ln,
            device="cuda",
            requires=("cuda",),
            description="torch.nn.LayerNorm on CUDA, float32",
        ),
        *(
            t(
                name=f"cuda-layernorm-{dtype}",
                factory=ln,
                dtype=dtype,
                device="cuda",
                requires=("cuda",),
                # torch's CUDA layer_norm reads weight and bias as the input's dtype: float32
                # ones are refused ("expected scalar type Half but found Float", H200, torch
                # 2.11; the param_dtypes check records that refusal). Its CPU kernel takes them.
                options={"param_dtypes": (dtype,)},
                description=f"torch.nn.LayerNorm on CUDA, {dtype} input and parameters",
            )
            for dtype in ("bfloat16", "float16")
        ),
        t(
            name="cuda-layernorm-autocast-fp16",
            factory=ln,
            dtype="float16",
            autocast="float16",
            device="cuda",
            requires=("cuda",),
            options={"param_dtypes": ("float32",)},
            description="float16 input under CUDA autocast (layer_norm runs in float32)",
        ),
        t(
            name="cuda-layernorm-compile",
            factory=ln,
            compile=True,
            device="cuda",
            requires=("cuda", "compile"),
            description="torch.compile(LayerNorm) on CUDA (Inductor's Triton kernels)",
        ),
    ]


__all__ = ["DROP_INS", "INTERPRETER_CAP", "FunctionalLayerNorm", "builtin", "triton_layer_norm"]

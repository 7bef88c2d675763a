"""GroupNorm targets: the catalog, and what a user's GroupNorm class can be a drop-in for.

Every GroupNorm target is a drop-in for ``torch.nn.GroupNorm``: same constructor (num_groups,
num_channels, eps, affine), same forward on (N, C, *spatial) input. verify.adapters.groupnorm runs
any of them on a case.
"""

from __future__ import annotations

import functools

import torch

from verify.strategies.groupnorm import GN_RANKS
from verify.targets.base import Target
from verify.targets.explicit_norms import ExplicitGroupNorm
from verify.targets.variants import DropIn


def _probe(cls: type) -> torch.nn.Module:
    """torch.nn.GroupNorm's constructor arguments, all by keyword after the first two."""
    return cls(2, 4, eps=1e-5, affine=True)


#: What a user's class can be a drop-in for: torch.nn.GroupNorm (or, with --family groupnorm,
#: any module with its constructor).
DROP_INS = (
    DropIn(
        family="groupnorm",
        base=torch.nn.GroupNorm,
        ranks=GN_RANKS,
        probe=_probe,
        parameter_dtype_input=(2, 4),
    ),
)


def builtin() -> list[Target]:
    gn = torch.nn.GroupNorm
    t = functools.partial(Target, family="groupnorm", ranks=GN_RANKS)
    cl = {"memory_format": "channels_last", "layouts": ("channels_last",), "ranks": (4, 5)}
    return [
        t(name="torch-groupnorm", factory=gn, description="torch.nn.GroupNorm, float32"),
        t(
            name="torch-groupnorm-float64",
            factory=gn,
            dtype="float64",
            description="torch.nn.GroupNorm in float64",
        ),
        t(
            name="torch-groupnorm-channels-last",
            factory=gn,
            **cl,
            description="torch.nn.GroupNorm on channels_last (and channels_last_3d) input",
        ),
        *(
            t(
                name=f"torch-groupnorm-{dtype}",
                factory=gn,
                dtype=dtype,
                description=f"torch.nn.GroupNorm on {dtype} input, float32 or {dtype} parameters",
            )
            for dtype in ("bfloat16", "float16")
        ),
        t(
            name="torch-groupnorm-compile",
            factory=gn,
            compile=True,
            ranks=(4,),
            requires=("compile",),
            description="torch.compile(GroupNorm) (Inductor: C++ on CPU, Triton on GPU), float32",
        ),
        t(
            name="torch-groupnorm-autocast-bf16",
            factory=gn,
            dtype="bfloat16",
            autocast="bfloat16",
            options={"param_dtypes": ("float32",)},
            description="bfloat16 input under torch.autocast (CPU), float32 parameters",
        ),
        t(
            name="varguard-explicit-groupnorm",
            factory=ExplicitGroupNorm,
            description="group norm op by op (the mutants' correct base), float32",
        ),
        t(
            name="varguard-explicit-groupnorm-channels-last",
            factory=ExplicitGroupNorm,
            **cl,
            description="the op-by-op group norm on channels_last input",
        ),
        *(
            t(
                name=f"varguard-explicit-groupnorm-{dtype}",
                factory=ExplicitGroupNorm,
                dtype=dtype,
                description=f"the op-by-op group norm on {dtype} input",
            )
            for dtype in ("bfloat16", "float16")
        ),
        # GPU-only: skipped with their reason where there is no CUDA device. torch's CUDA group
        # norm writes y (and dx) contiguous whatever the input's format (native_group_norm takes
        # the input's format on the CPU only; measured on an H200, torch 2.11): dense outputs
        # are still checked, channels_last ones are not asked of it.
        t(
            name="cuda-groupnorm",
            factory=gn,
            device="cuda",
            requires=("cuda",),
            options={"keeps_channels_last": False},
            description="torch.nn.GroupNorm on CUDA, float32",
        ),
        t(
            name="cuda-groupnorm-channels-last",
            factory=gn,
            device="cuda",
            requires=("cuda",),
            **cl,
            options={"keeps_channels_last": False},
            description="torch.nn.GroupNorm on CUDA, channels_last input",
        ),
        *(
            t(
                name=f"cuda-groupnorm-{dtype}",
                factory=gn,
                dtype=dtype,
                device="cuda",
                requires=("cuda",),
                # Its CUDA kernels read gamma and beta as the input's dtype: float32 ones are
                # refused ("expected scalar type Half but found Float"; the param_dtypes check
                # records that refusal), so its ordinary cases take module.to(dtype).
                options={"param_dtypes": (dtype,), "keeps_channels_last": False},
                description=f"torch.nn.GroupNorm on CUDA, {dtype} input and parameters",
            )
            for dtype in ("bfloat16", "float16")
        ),
        t(
            name="cuda-groupnorm-autocast-fp16",
            factory=gn,
            dtype="float16",
            autocast="float16",
            device="cuda",
            requires=("cuda",),
            options={"param_dtypes": ("float32",), "keeps_channels_last": False},
            description="float16 input under CUDA autocast (group_norm runs in float32)",
        ),
        t(
            name="cuda-groupnorm-compile",
            factory=gn,
            compile=True,
            ranks=(4,),
            device="cuda",
            requires=("cuda", "compile"),
            description="torch.compile(GroupNorm) on CUDA (Inductor's Triton kernels)",
        ),
    ]


__all__ = ["DROP_INS", "builtin"]

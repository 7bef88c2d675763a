"""The project's Triton kernels as targets (verify/kernels): batch norm and the fused tail.

They run natively on a CUDA GPU and under Triton's interpreter (``TRITON_INTERPRET=1``, set by
:mod:`verify.kernels` when there is no GPU) on the CPU, so CI verifies them with the same checks
as every other target. Without triton installed they are skipped with that reason. Nothing here
imports triton: the factories do, when a check first builds a module.
"""

from __future__ import annotations

import functools

import torch

from verify.targets.base import Target

#: Programs per block of channels in the reductions of the "split" target: every case with more
#: than 16 values per channel takes the multi-program schedule (partial statistics, combine,
#: elementwise) a GPU runs for large batches, and the interpreter verifies it.
SPLIT = 3


def triton_batchnorm2d(*args, **kwargs) -> torch.nn.Module:
    """``TritonBatchNorm2d(*args, **kwargs)``: the constructor of torch.nn.BatchNorm2d."""
    from verify.kernels.batchnorm import TritonBatchNorm2d

    return TritonBatchNorm2d(*args, **kwargs)


def fused_tail_basic_block(in_channels: int, planes: int, stride: int = 1) -> torch.nn.Module:
    """A BasicBlock with Triton batch norms and the fused ``relu(bn2(.) + shortcut)`` tail."""
    from verify.kernels.residual import FusedTailBasicBlock

    return FusedTailBasicBlock(in_channels, planes, stride)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def builtin() -> list[Target]:
    where = "native on CUDA" if torch.cuda.is_available() else "TRITON_INTERPRET=1 on the CPU"
    # The interpreter runs each program in numpy: keep cases at the quick profile's size.
    cap = None if torch.cuda.is_available() else 20_000
    bn = functools.partial(
        Target,
        family="batchnorm",
        factory=triton_batchnorm2d,
        device=_device(),
        requires=("triton",),
        max_elements=cap,
    )
    return [
        bn(
            name="triton-bn",
            description=f"Triton batch norm (Chan-combined two-pass statistics), NCHW, float32 "
            f"({where})",
        ),
        bn(
            name="triton-bn-channels-last",
            memory_format="channels_last",
            description=f"Triton batch norm on channels_last input, float32 ({where})",
        ),
        bn(
            name="triton-bn-float16",
            dtype="float16",
            description=f"Triton batch norm, float16 input, float32 statistics ({where})",
        ),
        bn(
            name="triton-bn-bfloat16",
            dtype="bfloat16",
            description=f"Triton batch norm, bfloat16 input, float32 statistics ({where})",
        ),
        bn(
            name="triton-bn-split",
            factory=functools.partial(triton_batchnorm2d, split=SPLIT),
            description=f"Triton batch norm forced onto the multi-program schedule ({SPLIT} "
            f"programs per channel block), NCHW, float32 ({where})",
        ),
        Target(
            name="triton-basic-fused-tail",
            family="residual",
            factory=fused_tail_basic_block,
            device=_device(),
            requires=("triton",),
            max_elements=cap,
            options={"block": "basic"},
            description=f"BasicBlock with Triton batch norms and the fused relu(bn2 + shortcut) "
            f"tail, float32 ({where})",
        ),
    ]


__all__ = ["builtin", "fused_tail_basic_block", "triton_batchnorm2d"]

"""Batch-norm targets: the catalog, and the few implementations the project writes itself.

Every batch-norm target is a drop-in for ``torch.nn.BatchNorm2d``: same constructor, same
forward. verify.adapters.batchnorm runs any of them on a case.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from verify.targets.base import Target
from verify.targets.closed_form_bn import (
    ClosedFormBatchNorm1d,
    ClosedFormBatchNorm2d,
    ClosedFormBatchNorm3d,
)
from verify.targets.explicit_bn import ExplicitBatchNorm2d
from verify.targets.variants import DropIn


def _probe(cls: type) -> torch.nn.Module:
    """torch.nn.BatchNorm*d's constructor arguments, all given by keyword after the first."""
    return cls(4, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)


#: What a user's batch-norm class can be a drop-in for, and the input ranks each takes. A class
#: that subclasses none of them is taken for a BatchNorm2d.
DROP_INS = (
    DropIn(family="batchnorm", base=torch.nn.BatchNorm2d, ranks=(4,), probe=_probe),
    DropIn(family="batchnorm", base=torch.nn.BatchNorm1d, ranks=(2, 3), probe=_probe),
    DropIn(family="batchnorm", base=torch.nn.BatchNorm3d, ranks=(5,), probe=_probe),
)


class FunctionalBatchNorm2d(torch.nn.BatchNorm2d):
    """torch.nn.functional.batch_norm called directly, with the module only holding state."""

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            momentum,
            self.eps,
        )


class FoldedConvBN(torch.nn.Module):
    """Inference-time conv-BN folding (torch.nn.utils.fusion.fuse_conv_bn_eval).

    An identity 1x1 convolution followed by a BatchNorm2d, folded into one convolution: its
    output must equal eval-mode batch norm of the input. Training mode is not offered.
    """

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(
            num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype
        )
        self.conv = torch.nn.Conv2d(
            num_features, num_features, 1, bias=False, device=device, dtype=dtype
        )
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(num_features).reshape_as(self.conv.weight))
        self._fused = None

    # The state the checks set (gamma, beta, running statistics) lives in the BN.
    @property
    def weight(self):
        return self.bn.weight

    @property
    def bias(self):
        return self.bn.bias

    @property
    def running_mean(self):
        return self.bn.running_mean

    @property
    def running_var(self):
        return self.bn.running_var

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("conv-BN folding is for inference only")
        return super().train(False)

    def forward(self, x):
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        fused = fuse_conv_bn_eval(self.conv.eval(), self.bn.eval())
        return fused(x)


# --- the built-in batch-norm targets --------------------------------------------------------


def builtin() -> list[Target]:
    bn = torch.nn.BatchNorm2d
    t = functools.partial(Target, family="batchnorm")
    return [
        t(
            name="torch-eager",
            factory=bn,
            description="torch.nn.BatchNorm2d, float32, every input layout",
        ),
        t(
            name="torch-eager-float64",
            factory=bn,
            dtype="float64",
            description="torch.nn.BatchNorm2d in float64",
        ),
        t(
            name="torch-channels-last",
            factory=bn,
            memory_format="channels_last",
            layouts=("channels_last",),
            description="torch.nn.BatchNorm2d on channels_last input",
        ),
        t(
            name="torch-batchnorm1d",
            factory=torch.nn.BatchNorm1d,
            ranks=(2, 3),
            description="torch.nn.BatchNorm1d on (N, C) and (N, C, L) input, float32",
        ),
        t(
            name="torch-batchnorm3d",
            factory=torch.nn.BatchNorm3d,
            ranks=(5,),
            description="torch.nn.BatchNorm3d on (N, C, D, H, W) input, float32",
        ),
        t(
            name="torch-functional",
            factory=FunctionalBatchNorm2d,
            description="torch.nn.functional.batch_norm",
        ),
        t(
            name="torch-compile",
            factory=bn,
            compile=True,
            requires=("compile",),
            description="torch.compile(BatchNorm2d) (Inductor: C++ on CPU, Triton on GPU)",
        ),
        t(
            name="torch-autocast-bf16",
            factory=bn,
            dtype="bfloat16",
            autocast="bfloat16",
            description="bfloat16 input under torch.autocast, float32 parameters",
        ),
        t(
            name="torch-float16",
            factory=bn,
            dtype="float16",
            description="float16 input, float32 parameters",
        ),
        t(
            name="varguard-explicit",
            factory=ExplicitBatchNorm2d,
            description="batch norm written op by op (the mutants' correct base)",
        ),
        # The closed-form base of the configuration mutants (verify/mutants), in the dtypes and
        # ranks its mutants take: each must pass, so a mutant fails for its one bug alone.
        t(
            name="varguard-closed-form",
            factory=ClosedFormBatchNorm2d,
            description="batch norm op by op with a closed-form backward (the configuration "
            "mutants' correct base), float32",
        ),
        *(
            t(
                name=f"varguard-closed-form-{dtype}",
                factory=ClosedFormBatchNorm2d,
                dtype=dtype,
                description=f"the closed-form batch norm on {dtype} input",
            )
            for dtype in ("float16", "bfloat16")
        ),
        t(
            name="varguard-closed-form-1d",
            factory=ClosedFormBatchNorm1d,
            ranks=(2, 3),
            description="the closed-form batch norm as BatchNorm1d",
        ),
        t(
            name="varguard-closed-form-3d",
            factory=ClosedFormBatchNorm3d,
            ranks=(5,),
            description="the closed-form batch norm as BatchNorm3d",
        ),
        t(
            name="torch-fold-conv-bn",
            factory=FoldedConvBN,
            modes=("eval",),
            options={"fixed": {"track_running_stats": True}},  # folding needs them
            description="conv-BN folding for inference (fuse_conv_bn_eval)",
        ),
        # GPU-only: skipped with their reason where there is no CUDA device.
        t(
            name="cuda-cudnn",
            factory=bn,
            device="cuda",
            requires=("cuda",),
            options={"cudnn": True},
            description="BatchNorm2d on CUDA through cuDNN",
        ),
        t(
            name="cuda-native",
            factory=bn,
            device="cuda",
            requires=("cuda",),
            options={"cudnn": False},
            description="BatchNorm2d on CUDA, native kernel",
        ),
        t(
            name="cuda-compile",
            factory=bn,
            device="cuda",
            compile=True,
            requires=("cuda", "compile"),
            description="torch.compile(BatchNorm2d) on CUDA (Inductor's Triton kernels)",
        ),
        t(
            name="cuda-autocast-fp16",
            factory=bn,
            device="cuda",
            dtype="float16",
            autocast="float16",
            requires=("cuda",),
            description="fp16 autocast on CUDA",
        ),
        t(
            name="cuda-syncbn",
            factory=torch.nn.SyncBatchNorm,
            device="cuda",
            requires=("cuda",),
            ranks=(2, 3, 4, 5),  # it takes any input of 2 dimensions or more
            description="torch.nn.SyncBatchNorm, world size 1",
        ),
    ]

"""Batch-norm targets and the adapter that runs any of them on a case.

Every batch-norm target is a drop-in for ``torch.nn.BatchNorm2d``: same constructor, same
forward. The adapter below does the rest the same way for all of them: build the module with the
case's hyper-parameters, put the input in the target's dtype and memory layout, run forward (and
backward) under the target's autocast / torch.compile, and hand back float64 arrays.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from verify.strategies.batchnorm import BNCase, make_affine, make_grad, make_input
from verify.targets.base import KnownDefect, Target, as_numpy, compiled, expect_like, to_input
from verify.targets.explicit_bn import ExplicitBatchNorm2d


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


@dataclass
class BNRun:
    """What one training step (or eval forward) of a target produced, as float64 arrays."""

    y: np.ndarray
    dx: np.ndarray | None = None
    dgamma: np.ndarray | None = None
    dbeta: np.ndarray | None = None
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None
    num_batches_tracked: int | None = None
    input_after: np.ndarray | None = None


def build(target: Target, case: BNCase) -> torch.nn.Module:
    """The target's module for ``case``: hyper-parameters, gamma and beta set from the case."""
    if isinstance(target.factory, type) and issubclass(target.factory, torch.nn.SyncBatchNorm):
        _single_process_group(target.device)
    module = target.factory(
        case.channels,
        eps=case.eps,
        momentum=case.momentum,
        affine=case.affine,
        track_running_stats=case.track_running_stats,
    )
    gamma, beta = make_affine(case)
    with torch.no_grad():
        if case.affine:
            module.weight.copy_(torch.from_numpy(gamma))
            module.bias.copy_(torch.from_numpy(beta))
    module.to(target.device)
    # Half-precision targets keep float32 parameters (mixed precision, as under autocast);
    # a float64 target runs entirely in float64.
    if target.dtype == "float64":
        module.double()
    return module


def _single_process_group(device: str) -> None:
    """SyncBatchNorm only synchronises inside a process group (without one it silently falls
    back to BatchNorm): make a world of size 1 so its distributed path is what runs."""
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def call(target: Target, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    fn = compiled(module) if target.compile else module
    cudnn = target.options.get("cudnn")
    flags = torch.backends.cudnn.flags(enabled=cudnn) if cudnn is not None else nullcontext()
    with flags, target.autocast_context():
        y = fn(x)
    expect_like(y, x, who=f"target {target.name!r}")
    return y


def train_step(
    target: Target,
    case: BNCase,
    module: torch.nn.Module | None = None,
    *,
    step: int = 0,
    backward: bool = True,
) -> BNRun:
    """One training-mode forward (and backward with the case's upstream gradient)."""
    module = module if module is not None else build(target, case)
    module.train()
    values = make_input(case, step=step)
    x = to_input(target, values, noncontiguous=case.noncontiguous, requires_grad=backward)
    y = call(target, module, x)
    run = BNRun(y=as_numpy(y))
    if backward:
        dy = torch.from_numpy(make_grad(case)).to(device=y.device, dtype=y.dtype)
        y.backward(dy)
        run.dx = as_numpy(x.grad)
        if case.affine:
            run.dgamma, run.dbeta = as_numpy(module.weight.grad), as_numpy(module.bias.grad)
    if case.track_running_stats:
        run.running_mean = as_numpy(module.running_mean)
        run.running_var = as_numpy(module.running_var)
        nbt = getattr(module, "num_batches_tracked", None)
        run.num_batches_tracked = None if nbt is None else int(nbt)
    run.input_after = as_numpy(x)
    return run


def eval_forward(
    target: Target, case: BNCase, running_mean: np.ndarray, running_var: np.ndarray
) -> np.ndarray:
    module = build(target, case)
    with torch.no_grad():
        module.running_mean.copy_(torch.from_numpy(running_mean))
        module.running_var.copy_(torch.from_numpy(running_var))
        module.eval()
        x = to_input(target, make_input(case), noncontiguous=case.noncontiguous)
        return as_numpy(call(target, module, x))


# --- the built-in batch-norm targets --------------------------------------------------------


def _dy_dot_centered_overflows_fp16(case: BNCase) -> bool:
    x, dy = make_input(case), make_grad(case)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    centered = x - x.mean(axis=axes, keepdims=True)
    return bool(np.max(np.abs((dy * centered).sum(axis=axes))) >= 65504.0)


#: Found by varguard on torch 2.13.0 (CPU): the backward of BatchNorm2d on a *non-contiguous*
#: float16 input keeps sum(dy * (x - mean)) in float16, so once it passes 65504 dx comes back
#: as +-inf (the contiguous path is right). Measured: values near the float16 limit, or one
#: outlier of 3.7e4 among 63 values.
FP16_NONCONTIGUOUS_BACKWARD_OVERFLOW = KnownDefect(
    checks=("batchnorm.backward",),
    description="torch CPU BatchNorm2d backward returns inf on non-contiguous float16 input "
    "when sum(dy * (x - mean)) exceeds 65504 (it is accumulated in float16)",
    matches=lambda case: (
        case.dtype == "float16" and case.noncontiguous and _dy_dot_centered_overflows_fp16(case)
    ),
    example=BNCase(
        shape=(1, 1, 1, 3),
        dtype="float16",
        distribution="near_float16_max",
        affine=False,
        noncontiguous=True,
    ),
)


def builtin() -> list[Target]:
    bn = torch.nn.BatchNorm2d
    t = functools.partial(Target, family="batchnorm")
    return [
        t(name="torch-eager", factory=bn, description="torch.nn.BatchNorm2d, NCHW, float32"),
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
            description="torch.nn.BatchNorm2d on channels_last input",
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
            known_defects=(FP16_NONCONTIGUOUS_BACKWARD_OVERFLOW,),
        ),
        t(
            name="varguard-explicit",
            factory=ExplicitBatchNorm2d,
            description="batch norm written op by op (the mutants' correct base)",
        ),
        t(
            name="torch-fold-conv-bn",
            factory=FoldedConvBN,
            modes=("eval",),
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
            description="torch.nn.SyncBatchNorm, world size 1",
        ),
    ]

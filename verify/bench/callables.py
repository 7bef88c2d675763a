"""The callables `varguard bench` times, one per kind of operation (an :class:`Op`'s ``kind``):
each gets the target, its module built and in training mode, and the shape, sets up its inputs
once and returns what one timed round calls.

The modules are what the family's drop-in base constructs (``FamilyBench.module``), so any
target of the family, a user's class included, runs here unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from verify.adapters.base import as_run
from verify.targets.base import Target

Timed = Callable[[], object]


def contexts(target: Target) -> contextlib.ExitStack:
    """What a target's call runs under: its cuDNN switch, its autocast."""
    stack = contextlib.ExitStack()
    cudnn = target.options.get("cudnn")
    if cudnn is not None:
        stack.enter_context(torch.backends.cudnn.flags(enabled=cudnn))
    stack.enter_context(target.autocast_context())
    return stack


def call(target: Target, module: torch.nn.Module, *inputs: torch.Tensor):
    """One call of the target's module (compiled for a torch.compile target)."""
    fn = as_run(target, module)
    with contexts(target):
        return fn(*inputs)


def activation(target: Target, shape: tuple, gen: torch.Generator) -> torch.Tensor:
    """Standard normal values of ``shape`` in the target's dtype, device and memory format."""
    t = torch.randn(shape, generator=gen).to(device=target.device, dtype=target.torch_dtype)
    if target.memory_format == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.requires_grad]


def forward(target: Target, module: torch.nn.Module, shape: tuple) -> Timed:
    """The training forward with autograd recording: what a training step runs."""
    x = activation(target, shape, torch.Generator().manual_seed(0)).requires_grad_(True)
    return lambda: call(target, module, x)


def forward_eval(target: Target, module: torch.nn.Module, shape: tuple) -> Timed:
    """The eval-mode forward without autograd: inference."""
    module.eval()
    x = activation(target, shape, torch.Generator().manual_seed(0))

    def run():
        with torch.no_grad():
            return call(target, module, x)

    return run


def backward(target: Target, module: torch.nn.Module, shape: tuple) -> Timed:
    """The backward of one training forward (done once, outside the timing): dx and the
    parameters' gradients from a random dy."""
    gen = torch.Generator().manual_seed(0)
    x = activation(target, shape, gen).requires_grad_(True)
    y = call(target, module, x)
    dy = activation(target, shape, gen).to(y.dtype)
    inputs = [x, *_params(module)]
    return lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True)


class BNReluTail(torch.nn.Module):
    """relu(bn(x) + shortcut): fused where the batch norm offers it (the Triton kernels)."""

    def __init__(self, bn: torch.nn.Module):
        super().__init__()
        self.bn = bn

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        fused = getattr(self.bn, "forward_add_relu", None)
        if fused is not None:
            return fused(x, shortcut)
        return torch.relu(self.bn(x) + shortcut)


def bn_relu_tail(target: Target, module: torch.nn.Module, shape: tuple) -> Timed:
    """A bottleneck's tail after its last conv, training forward with autograd recording."""
    gen = torch.Generator().manual_seed(0)
    x = activation(target, shape, gen).requires_grad_(True)
    shortcut = activation(target, shape, gen)
    # Built once: a torch.compile target compiles the whole tail (the add and the ReLU fuse
    # into the norm), and the compiled wrapper is cached on this object.
    tail = BNReluTail(module)
    return lambda: call(target, tail, x, shortcut)


def _stream(target: Target, shape: tuple, gen: torch.Generator):
    """(x, residual) of a pre-norm tail. An in-place tail writes h into residual: autograd
    refuses that on a leaf that requires grad, and in a network the stream is the previous
    block's output anyway; its residual records no gradient, so each round adds x into it
    (values grow; in its float dtype they stay finite for any number of rounds timed)."""
    x = activation(target, shape, gen).requires_grad_(True)
    residual = activation(target, shape, gen)
    if not target.options.get("inplace"):
        residual.requires_grad_(True)
    return x, residual


def add_norm(target: Target, module: torch.nn.Module, shape: tuple) -> Timed:
    """``(y, h) = tail(x, residual)`` with autograd recording: a pre-norm block's step."""
    x, residual = _stream(target, shape, torch.Generator().manual_seed(0))
    return lambda: call(target, module, x, residual)


def add_norm_backward(target: Target, module: torch.nn.Module, shape: tuple) -> Timed:
    """The backward of one tail call: dy into y and the stream's own gradient dh into h (h is
    the next block's residual input), to x, residual and the weight."""
    gen = torch.Generator().manual_seed(0)
    x, residual = _stream(target, shape, gen)
    y, h = call(target, module, x, residual)
    dy = activation(target, shape, gen).to(y.dtype)
    dh = activation(target, shape, gen).to(h.dtype)
    inputs = [t for t in (x, residual) if t.requires_grad] + _params(module)
    return lambda: torch.autograd.grad((y, h), inputs, (dy, dh), retain_graph=True)


#: An operation's ``kind`` -> the function that sets it up and returns its timed callable.
KINDS: dict[str, Callable[[Target, torch.nn.Module, tuple], Timed]] = {
    "forward": forward,
    "forward-eval": forward_eval,
    "backward": backward,
    "bn-relu-tail": bn_relu_tail,
    "add-norm": add_norm,
    "add-norm-backward": add_norm_backward,
}

__all__ = ["KINDS", "BNReluTail", "activation", "call", "contexts"]

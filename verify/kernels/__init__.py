"""The project's own Triton kernels: batch-norm forward/backward and a fused residual tail.

They are targets like any other (verify/targets/triton.py) and pass the same checks. Without a
CUDA device they run under Triton's interpreter (``TRITON_INTERPRET=1``), on CPU tensors: that is
how CI verifies them on a machine with no GPU. Triton reads the variable when a kernel is
decorated, so it is set here, before :mod:`verify.kernels.triton_bn` defines any kernel; a process
that needs it earlier (to interpret other Triton code too) sets it itself.
"""

from __future__ import annotations

import importlib.util
import os

import torch

if not torch.cuda.is_available():
    # No GPU: the interpreter is the only way Triton code can run at all. An explicit setting
    # is kept (TRITON_INTERPRET=0 compiles kernels for a GPU without one: gpu_compile.py).
    os.environ.setdefault("TRITON_INTERPRET", "1")

#: True when the kernels run in Triton's interpreter (numpy on the CPU): correct, not fast.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_missing() -> str | None:
    """Why the kernels cannot run here, or None."""
    if importlib.util.find_spec("triton") is None:
        return "needs triton (pip install 'varguard[triton]')"
    return None


def kernel_device() -> str:
    """Where the kernels' tensors live: the GPU natively, the CPU under the interpreter."""
    return "cpu" if INTERPRETED else "cuda"


__all__ = ["INTERPRETED", "kernel_device", "triton_missing"]

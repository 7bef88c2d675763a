"""Compile every Triton kernel for a GPU, on a machine without one.

The interpreter runs a kernel's Python: it cannot tell whether Triton's compiler accepts it (typed
loop-carried values, constexpr branches, layouts). ``triton.compile`` needs no device: this
compiles each kernel of :mod:`verify.kernels.triton_bn` down to PTX and a cubin for an sm_90 GPU
(H100), for both layouts, float32 and bfloat16 activations, and every compile-time flag on and
off, so a kernel that only the interpreter accepts fails in CI, not on the first GPU::

    TRITON_INTERPRET=0 python -m verify.kernels.gpu_compile

(``TRITON_INTERPRET=0`` is needed: without a GPU verify.kernels turns the interpreter on.)
"""

from __future__ import annotations

import re
import sys
import time

#: Pointer arguments that hold activations (the input's dtype); the rest are float32 vectors.
ACTIVATIONS = {"x_ptr", "y_ptr", "res_ptr", "dy_ptr", "dx_ptr", "dres_ptr", "out_ptr"}
INTEGERS = {"M", "C", "S", "total", "rows_per_split", "SPLIT"}
#: Tile sizes the launcher picks on a GPU (NCHW, channels_last) and the elementwise block.
BLOCKS = {False: {"BLOCK_R": 1024, "BLOCK_C": 4}, True: {"BLOCK_R": 64, "BLOCK_C": 64}}


def _attrs(sig: dict) -> dict:
    """What a launch on aligned tensors of sizes divisible by 16 tells the compiler (the usual
    case at ResNet sizes): 16-byte aligned pointers and integers divisible by 16."""
    return {
        (i,): [["tt.divisibility", 16]]
        for i, kind in enumerate(sig.values())
        if kind.startswith("*") or kind == "i32"
    }


def _signature(fn, activation: str, flags: bool, channels_last: bool):
    sig, consts = {}, {}
    for p in fn.params:
        name = p.name
        if p.is_constexpr:
            sig[name] = "constexpr"
            if name == "CHANNELS_LAST":
                consts[name] = channels_last
            elif name == "BLOCK":
                consts[name] = 4096
            elif name in ("BLOCK_R", "BLOCK_C"):
                consts[name] = (
                    256 if fn.__name__ == "_stats_combine_kernel" else (BLOCKS[channels_last][name])
                )
            else:
                consts[name] = flags
        elif name.endswith("_ptr"):
            sig[name] = f"*{activation}" if name in ACTIVATIONS else "*fp32"
        elif name in INTEGERS:
            sig[name] = "i32"
        else:
            sig[name] = "fp32"
    return sig, consts


def compile_all(arch: int = 90) -> list[tuple[str, str | None, float]]:
    """[(kernel and specialisation, error or None, seconds)] for every kernel; the label says
    how many of its global loads are 128-bit vector loads."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from verify.kernels import INTERPRETED
    from verify.kernels import triton_bn as k

    if INTERPRETED:
        raise RuntimeError(
            "TRITON_INTERPRET is on: kernels are interpreted functions and cannot be compiled; "
            "run with TRITON_INTERPRET=0"
        )
    kernels = [
        k._forward_kernel,
        k._backward_kernel,
        k._stats_partial_kernel,
        k._stats_combine_kernel,
        k._apply_kernel,
        k._grad_sums_partial_kernel,
        k._dx_kernel,
    ]
    target = GPUTarget("cuda", arch, 32)
    out = []
    for fn in kernels:
        for channels_last in (False, True):
            for activation in ("fp32", "bf16"):
                for flags in (True, False):
                    sig, consts = _signature(fn, activation, flags, channels_last)
                    label = (
                        f"{fn.__name__} channels_last={channels_last} {activation} flags={flags}"
                    )
                    started = time.perf_counter()
                    try:
                        src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=_attrs(sig))
                        ptx = triton.compile(src, target=target).asm["ptx"]
                        loads = re.findall(r"ld\.global(\.v\d)?", ptx)
                        vector = sum(bool(v) for v in loads)
                        label += f": {vector}/{len(loads)} global loads vectorised"
                        err = None
                    except Exception as exc:  # report every kernel, not just the first
                        err = f"{type(exc).__name__}: {str(exc).strip()[:2000]}"
                    out.append((label, err, time.perf_counter() - started))
    return out


def main() -> int:
    results = compile_all()
    for label, err, seconds in results:
        print(f"{'ok  ' if err is None else 'FAIL'} {label} ({seconds:.1f} s)")
        if err:
            print("     " + err.replace("\n", "\n     "))
    bad = sum(err is not None for _, err, _ in results)
    print(f"{len(results) - bad}/{len(results)} compiled for sm_90")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

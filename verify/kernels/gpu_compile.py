"""Compile every Triton kernel for a GPU, on a machine without one.

The interpreter runs a kernel's Python: it cannot tell whether Triton's compiler accepts it (typed
loop-carried values, constexpr branches, layouts). ``triton.compile`` needs no device: this
compiles each kernel down to PTX and a cubin for an sm_90 GPU (H100), so a kernel that only the
interpreter accepts fails in CI, not on the first GPU. Two families:

- :mod:`verify.kernels.triton_bn`: both layouts, float32 and bfloat16 activations, every
  compile-time flag on and off (56 kernels);
- :mod:`verify.kernels.triton_norms`: float32, bfloat16 and float16 activations (float32
  parameters), LayerNorm and RMSNorm (CENTER), both schedules (ONE_BLOCK, with the tiles the
  launcher picks on a GPU), every other flag on and off (60 kernels).

::

    TRITON_INTERPRET=0 python -m verify.kernels.gpu_compile [triton_bn] [triton_norms]

(``TRITON_INTERPRET=0`` is needed: without a GPU verify.kernels turns the interpreter on. No
family named: all of them.)
"""

from __future__ import annotations

import re
import sys
import time

#: Pointer arguments that hold activations (the input's dtype); the rest are float32 vectors.
ACTIVATIONS = {
    "x_ptr", "y_ptr", "res_ptr", "dy_ptr", "dx_ptr", "dres_ptr", "out_ptr", "rout_ptr",
    "dout_ptr",
}  # fmt: skip
INTEGERS = {"M", "C", "S", "D", "total", "rows_per_split", "rows_per_program", "SPLIT"}
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


def _signature(fn, activation: str, consts: dict) -> dict:
    """Argument types of ``fn`` by name; ``consts`` must hold every constexpr."""
    sig = {}
    for p in fn.params:
        name = p.name
        if p.is_constexpr:
            sig[name] = "constexpr"
            if name not in consts:
                raise KeyError(f"{fn.__name__}: no value for constexpr {name}")
        elif name.endswith("_ptr"):
            sig[name] = f"*{activation}" if name in ACTIVATIONS else "*fp32"
        elif name in INTEGERS:
            sig[name] = "i32"
        else:
            sig[name] = "fp32"
    return sig


def _bn_specialisations():
    """(label, kernel, activation, constexprs) of every triton_bn kernel to compile."""
    from verify.kernels import triton_bn as k

    kernels = [
        k._forward_kernel,
        k._backward_kernel,
        k._stats_partial_kernel,
        k._stats_combine_kernel,
        k._apply_kernel,
        k._grad_sums_partial_kernel,
        k._dx_kernel,
    ]
    for fn in kernels:
        for channels_last in (False, True):
            for activation in ("fp32", "bf16"):
                for flags in (True, False):
                    consts = {}
                    for p in fn.params:
                        if not p.is_constexpr:
                            continue
                        if p.name == "CHANNELS_LAST":
                            consts[p.name] = channels_last
                        elif p.name in ("BLOCK_R", "BLOCK_C"):
                            consts[p.name] = (
                                256
                                if fn.__name__ == "_stats_combine_kernel"
                                else BLOCKS[channels_last][p.name]
                            )
                        else:
                            consts[p.name] = flags
                    label = (
                        f"{fn.__name__} channels_last={channels_last} {activation} flags={flags}"
                    )
                    yield label, fn, activation, consts


#: Row tiles the norms launcher picks on a GPU: (BLOCK_M, BLOCK_D) of a row in one tile (D =
#: 1024: two rows of 1024 per 2048-element tile) and of longer rows (one row, 4096 at a time).
NORM_BLOCKS = {True: (2, 1024), False: (1, 4096)}


def _norms_specialisations():
    """(label, kernel, activation, constexprs) of every triton_norms kernel to compile."""
    from verify.kernels import triton_norms as k

    for fn in (k._forward_kernel, k._backward_kernel, k._param_grads_kernel):
        schedules = (True, False) if "ONE_BLOCK" in fn.arg_names else (False,)
        for one_block in schedules:
            for center in (True, False):
                for activation in ("fp32", "bf16", "fp16"):
                    for flags in (True, False):
                        block_m, block_d = NORM_BLOCKS[one_block]
                        consts = {}
                        for p in fn.params:
                            if not p.is_constexpr:
                                continue
                            consts[p.name] = {
                                "ONE_BLOCK": one_block,
                                "CENTER": center,
                                "BLOCK_M": block_m,
                                "BLOCK_D": block_d,
                            }.get(p.name, flags)
                        label = (
                            f"{fn.__name__} one_block={one_block} center={center} {activation} "
                            f"flags={flags}"
                        )
                        yield label, fn, activation, consts


FAMILIES = {"triton_bn": _bn_specialisations, "triton_norms": _norms_specialisations}


def compile_all(
    arch: int = 90, families: list[str] | None = None
) -> list[tuple[str, str, str | None, float]]:
    """[(family, kernel and specialisation, error or None, seconds)] for every kernel of the
    named families (all by default); the label says how many of its global loads are 128-bit
    vector loads."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from verify.kernels import INTERPRETED

    if INTERPRETED:
        raise RuntimeError(
            "TRITON_INTERPRET is on: kernels are interpreted functions and cannot be compiled; "
            "run with TRITON_INTERPRET=0"
        )
    unknown = sorted(set(families or ()) - set(FAMILIES))
    if unknown:
        raise ValueError(f"families={unknown}: unknown; choose from {sorted(FAMILIES)}")
    target = GPUTarget("cuda", arch, 32)
    out = []
    for family in families or list(FAMILIES):
        for label, fn, activation, consts in FAMILIES[family]():
            started = time.perf_counter()
            try:
                sig = _signature(fn, activation, consts)
                src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=_attrs(sig))
                ptx = triton.compile(src, target=target).asm["ptx"]
                loads = re.findall(r"ld\.global(\.v\d)?", ptx)
                vector = sum(bool(v) for v in loads)
                label += f": {vector}/{len(loads)} global loads vectorised"
                err = None
            except Exception as exc:  # report every kernel, not just the first
                err = f"{type(exc).__name__}: {str(exc).strip()[:2000]}"
            out.append((family, label, err, time.perf_counter() - started))
    return out


def main(argv: list[str] | None = None) -> int:
    """Compile the families named in ``argv`` (all by default); 1 if any kernel failed."""
    families = list(sys.argv[1:] if argv is None else argv) or None
    results = compile_all(families=families)
    for _, label, err, seconds in results:
        print(f"{'ok  ' if err is None else 'FAIL'} {label} ({seconds:.1f} s)")
        if err:
            print("     " + err.replace("\n", "\n     "))
    for family in families or list(FAMILIES):
        mine = [err for fam, _, err, _ in results if fam == family]
        good = sum(err is None for err in mine)
        print(f"{family}: {good}/{len(mine)} compiled for sm_90")
    bad = sum(err is not None for _, _, err, _ in results)
    print(f"{len(results) - bad}/{len(results)} compiled for sm_90")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Triton kernels for row normalisations: LayerNorm, RMSNorm and a fused residual add + RMSNorm.

The input is viewed as a matrix of M rows of D elements (D: the product of normalized_shape), made
contiguous by the caller, so element (r, c) lives at ``r D + c``. Tiles are [BLOCK_M, BLOCK_D]:
BLOCK_M rows, BLOCK_D consecutive elements of each, reduced along axis 1 for the row statistics
and along axis 0 for the parameter gradients.

Statistics are float32 whatever the storage type. LayerNorm: every tile is reduced by two passes
over registers (the tile's mean, then the sum of squared deviations from it) and, when a row is
longer than one tile, the tiles are folded into the row's (count, mean, M2) by Chan, Golub &
LeVeque's pairwise update: no E[x^2] - E[x]^2 anywhere. RMSNorm: the mean of x^2 is a sum of
non-negative terms (no cancellation), accumulated tile by tile.

Two schedules of the same arithmetic, told apart by the compile-time flag ONE_BLOCK:

- the row fits one tile (D <= BLOCK_D): the forward reads x once and normalises from registers;
  the backward computes dx from registers and accumulates dweight and dbias over the rows of its
  range in registers, one partial row per program, summed afterwards (deterministic: no atomics);
- longer rows: the forward makes two passes over the row (statistics, then output), the backward
  two (the two row sums, then dx), and a separate column kernel reduces dweight and dbias over
  ranges of rows, again one partial row per range.

The fused residual add computes s = x + residual in float32, rounds it to the storage type (that
is the residual stream the next layer sees: vLLM's fused_add_rms_norm), stores it, and normalises
the rounded s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from verify.kernels import INTERPRETED
from verify.kernels.interpreter import library, patch_language_once

cdiv = triton.cdiv


patch_language_once()

_sum = library(tl.sum)


# --- shared pieces ---------------------------------------------------------------------------

if INTERPRETED:

    @triton.jit
    def _to_storage(v, ptr):
        """float32 ``v`` in ptr's element type, rounded to nearest even.

        Triton's interpreter converts float32 to bfloat16 by truncation (its ``cast_impl``
        drops the low 16 bits), a GPU by ``cvt.rn``: round to nearest even, as torch does. The
        interpreter would then verify a different rounding than the GPU runs, so bfloat16 is
        rounded here by integer arithmetic on the bits (NaN kept NaN); float16 goes through
        numpy, which rounds to nearest even already.
        """
        if ptr.dtype.element_ty == tl.bfloat16:
            u = v.to(tl.uint32, bitcast=True)
            r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
            out = r.to(tl.uint16).to(tl.bfloat16, bitcast=True)
            out = tl.where(v != v, float("nan"), out)
        else:
            out = v.to(ptr.dtype.element_ty)
        return out

else:

    @triton.jit
    def _to_storage(v, ptr):
        """float32 ``v`` in ptr's element type, rounded to nearest even (``cvt.rn``)."""
        return v.to(ptr.dtype.element_ty)


@triton.jit
def _tile(r0, c0, row_end, D, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """Offsets and mask of the [BLOCK_M, BLOCK_D] tile of rows [r0, r0 + BLOCK_M) and elements
    [c0, c0 + BLOCK_D) of each row; rows from ``row_end`` on are masked."""
    r = r0 + tl.arange(0, BLOCK_M)[:, None]
    c = c0 + tl.arange(0, BLOCK_D)[None, :]
    return r * D + c, (r < row_end) & (c < D)


@triton.jit
def _chan(count, mean, m2, n_b, mean_b, m2_b):
    """Chan, Golub & LeVeque's update: (count, mean, M2) of the union of two sets.
    (triton_bn has the same five lines for channels.)"""
    n = count + n_b
    w_b = tl.where(n > 0, n_b / tl.where(n > 0, n, 1.0), 0.0)
    delta = mean_b - mean
    return n, mean + delta * w_b, m2 + m2_b + delta * delta * (count * w_b)


@triton.jit
def _load_input(
    x_ptr, res_ptr, rout_ptr, offs, mask, ADD_RESIDUAL: tl.constexpr,
):  # fmt: skip
    """A tile of the values to normalise, float32: x, or with the fused add the rounded
    s = x + residual, which is also stored (the new residual stream)."""
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if ADD_RESIDUAL:
        res = tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        # Rounded before the statistics: the next layer adds to the stored s, so the norm must
        # describe that tensor (vLLM's fused_add_rms_norm). For float16 and bfloat16 the float32
        # sum rounded once is the correctly rounded x + residual (24 >= 2p + 2 significand bits,
        # so the double rounding is harmless): it equals torch's x + residual in that dtype.
        s = _to_storage(x + res, rout_ptr)
        tl.store(rout_ptr + offs, s, mask=mask)
        x = s.to(tl.float32)
    return x


@triton.jit
def _row_stats(
    x_ptr, res_ptr, rout_ptr, r0, M, D,
    CENTER: tl.constexpr, ADD_RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    """(mean, var) of rows [r0, r0 + BLOCK_M) longer than one tile: tile-wise two-pass and
    Chan-combined with CENTER (LayerNorm, biased variance); mean 0 and var = mean(x^2) without
    (RMSNorm). With the fused add, the rounded sums are stored on the way."""
    count = tl.full([BLOCK_M], 0.0, tl.float32)
    mean = tl.full([BLOCK_M], 0.0, tl.float32)
    m2 = tl.full([BLOCK_M], 0.0, tl.float32)
    for c0 in range(0, D, BLOCK_D):
        offs, mask = _tile(r0, c0, M, D, BLOCK_M, BLOCK_D)
        x = _load_input(x_ptr, res_ptr, rout_ptr, offs, mask, ADD_RESIDUAL)
        if CENTER:
            n_b = tl.full([BLOCK_M], 0.0, tl.float32) + tl.minimum(D - c0, BLOCK_D).to(tl.float32)
            mean_b = tl.div_rn(_sum(x, axis=1), n_b)
            d = tl.where(mask, x - mean_b[:, None], 0.0)
            count, mean, m2 = _chan(count, mean, m2, n_b, mean_b, _sum(d * d, axis=1))
        else:
            m2 += _sum(x * x, axis=1)  # masked elements load as 0
    return mean, tl.div_rn(m2, tl.full([BLOCK_M], 0.0, tl.float32) + D)


@triton.jit
def _affine_row(
    w_ptr, b_ptr, c, cmask, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
):  # fmt: skip
    """weight and bias of elements ``c`` as [1, BLOCK_D] rows (1 and 0 without them)."""
    w = 1.0
    if HAS_WEIGHT:
        w = tl.load(w_ptr + c, mask=cmask, other=1.0).to(tl.float32)[None, :]
    b = 0.0
    if HAS_BIAS:
        b = tl.load(b_ptr + c, mask=cmask, other=0.0).to(tl.float32)[None, :]
    return w, b


# --- forward -----------------------------------------------------------------------------------


@triton.jit
def _forward_kernel(
    x_ptr, res_ptr, rout_ptr, y_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, M, D, eps,
    CENTER: tl.constexpr, ADD_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr, ONE_BLOCK: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    """y = (x - mean) rstd [weight] [+ bias] for BLOCK_M rows (mean = 0 without CENTER);
    mean (with CENTER) and rstd = 1/sqrt(var + eps) are stored per row, float32."""
    r0 = tl.program_id(0) * BLOCK_M
    rows = r0 + tl.arange(0, BLOCK_M)
    rmask = rows < M
    n = tl.full([BLOCK_M], 0.0, tl.float32) + D
    if ONE_BLOCK:
        offs, mask = _tile(r0, 0, M, D, BLOCK_M, BLOCK_D)
        x = _load_input(x_ptr, res_ptr, rout_ptr, offs, mask, ADD_RESIDUAL)
        if CENTER:
            mean = tl.div_rn(_sum(x, axis=1), n)
            d = tl.where(mask, x - mean[:, None], 0.0)
            var = tl.div_rn(_sum(d * d, axis=1), n)
        else:
            mean = tl.full([BLOCK_M], 0.0, tl.float32)
            d = x
            var = tl.div_rn(_sum(x * x, axis=1), n)
        rstd = tl.div_rn(1.0, tl.sqrt_rn(var + eps))
        w, b = _affine_row(w_ptr, b_ptr, tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_D) < D,
                           HAS_WEIGHT, HAS_BIAS)  # fmt: skip
        y = d * rstd[:, None] * w + b
        tl.store(y_ptr + offs, _to_storage(y, y_ptr), mask=mask)
    else:
        mean, var = _row_stats(
            x_ptr, res_ptr, rout_ptr, r0, M, D, CENTER, ADD_RESIDUAL, BLOCK_M, BLOCK_D
        )
        rstd = tl.div_rn(1.0, tl.sqrt_rn(var + eps))
        if ADD_RESIDUAL:
            # The second pass reads back the rounded sums this program stored in the first.
            # A thread may read elements another thread wrote: make the writes visible.
            tl.debug_barrier()
        for c0 in range(0, D, BLOCK_D):
            offs, mask = _tile(r0, c0, M, D, BLOCK_M, BLOCK_D)
            if ADD_RESIDUAL:
                x = tl.load(rout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            else:
                x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            c = c0 + tl.arange(0, BLOCK_D)
            w, b = _affine_row(w_ptr, b_ptr, c, c < D, HAS_WEIGHT, HAS_BIAS)
            y = (x - mean[:, None]) * rstd[:, None] * w + b
            tl.store(y_ptr + offs, _to_storage(y, y_ptr), mask=mask)
    if CENTER:
        tl.store(mean_ptr + rows, mean, mask=rmask)
    tl.store(rstd_ptr + rows, rstd, mask=rmask)


# --- backward ----------------------------------------------------------------------------------


@triton.jit
def _backward_kernel(
    dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, dout_ptr, dx_ptr, pdw_ptr, pdb_ptr,
    M, D, rows_per_program,
    CENTER: tl.constexpr, HAS_WEIGHT: tl.constexpr, ADD_GRAD: tl.constexpr,
    WANT_DX: tl.constexpr, PARAM_GRADS: tl.constexpr, ONE_BLOCK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """dx = rstd (g - mean(g) - x_hat mean(g x_hat)), g = dy weight (no mean(g) term without
    CENTER), [+ the gradient reaching the stored residual stream, ADD_GRAD], for the rows
    [pid rows_per_program, +rows_per_program). With ONE_BLOCK and PARAM_GRADS, also this range's
    partial sums of dy x_hat (dweight) and dy (dbias), one row of pdw/pdb per program."""
    pid = tl.program_id(0)
    start = pid * rows_per_program
    end = tl.minimum(start + rows_per_program, M)
    n = tl.full([BLOCK_M], 0.0, tl.float32) + D
    if ONE_BLOCK:
        c = tl.arange(0, BLOCK_D)
        cmask = c < D
        w, _ = _affine_row(w_ptr, w_ptr, c, cmask, HAS_WEIGHT, False)
        acc_dw = tl.full([BLOCK_D], 0.0, tl.float32)
        acc_db = tl.full([BLOCK_D], 0.0, tl.float32)
        for r0 in range(start, end, BLOCK_M):
            rows = r0 + tl.arange(0, BLOCK_M)
            rmask = rows < end
            offs, mask = _tile(r0, 0, end, D, BLOCK_M, BLOCK_D)
            rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)[:, None]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if CENTER:
                x = x - tl.load(mean_ptr + rows, mask=rmask, other=0.0)[:, None]
            x_hat = tl.where(mask, x * rstd, 0.0)
            g = dy * w
            if WANT_DX:
                c1 = tl.div_rn(_sum(g * x_hat, axis=1), n)[:, None]
                if CENTER:
                    c2 = tl.div_rn(_sum(g, axis=1), n)[:, None]
                    dx = (g - c2 - x_hat * c1) * rstd
                else:
                    dx = (g - x_hat * c1) * rstd
                if ADD_GRAD:
                    dx += tl.load(dout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                tl.store(dx_ptr + offs, _to_storage(dx, dx_ptr), mask=mask)
            if PARAM_GRADS:
                acc_dw += _sum(dy * x_hat, axis=0)
                acc_db += _sum(dy, axis=0)
        if PARAM_GRADS:
            tl.store(pdw_ptr + pid * D + c, acc_dw, mask=cmask)
            tl.store(pdb_ptr + pid * D + c, acc_db, mask=cmask)
    else:
        for r0 in range(start, end, BLOCK_M):
            rows = r0 + tl.arange(0, BLOCK_M)
            rmask = rows < end
            rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)[:, None]
            mean = 0.0
            if CENTER:
                mean = tl.load(mean_ptr + rows, mask=rmask, other=0.0)[:, None]
            # First pass: the row sums of g x_hat and g.
            s_gx = tl.full([BLOCK_M], 0.0, tl.float32)
            s_g = tl.full([BLOCK_M], 0.0, tl.float32)
            for c0 in range(0, D, BLOCK_D):
                offs, mask = _tile(r0, c0, end, D, BLOCK_M, BLOCK_D)
                c = c0 + tl.arange(0, BLOCK_D)
                w, _ = _affine_row(w_ptr, w_ptr, c, c < D, HAS_WEIGHT, False)
                x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32) * w
                s_gx += _sum(g * tl.where(mask, (x - mean) * rstd, 0.0), axis=1)
                if CENTER:
                    s_g += _sum(g, axis=1)
            c1 = tl.div_rn(s_gx, n)[:, None]
            c2 = tl.div_rn(s_g, n)[:, None]
            # Second pass: dx.
            for c0 in range(0, D, BLOCK_D):
                offs, mask = _tile(r0, c0, end, D, BLOCK_M, BLOCK_D)
                c = c0 + tl.arange(0, BLOCK_D)
                w, _ = _affine_row(w_ptr, w_ptr, c, c < D, HAS_WEIGHT, False)
                x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32) * w
                # Without CENTER, s_g stayed 0 and c2 is 0: g - c2 is g exactly.
                dx = (g - c2 - (x - mean) * rstd * c1) * rstd
                if ADD_GRAD:
                    dx += tl.load(dout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                tl.store(dx_ptr + offs, _to_storage(dx, dx_ptr), mask=mask)


@triton.jit
def _param_grads_kernel(
    dy_ptr, x_ptr, mean_ptr, rstd_ptr, pdw_ptr, pdb_ptr, M, D, rows_per_program,
    CENTER: tl.constexpr, WANT_DW: tl.constexpr, WANT_DB: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Partial sums of dy x_hat (dweight) and dy (dbias) of BLOCK_D elements over one range of
    rows (rows longer than one tile: the row kernel cannot hold a whole row of them)."""
    c = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = c < D
    pid_r = tl.program_id(1)
    start = pid_r * rows_per_program
    end = tl.minimum(start + rows_per_program, M)
    acc_dw = tl.full([BLOCK_D], 0.0, tl.float32)
    acc_db = tl.full([BLOCK_D], 0.0, tl.float32)
    for r0 in range(start, end, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        rmask = rows < end
        offs, mask = _tile(r0, tl.program_id(0) * BLOCK_D, end, D, BLOCK_M, BLOCK_D)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if WANT_DW:
            rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)[:, None]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if CENTER:
                x = x - tl.load(mean_ptr + rows, mask=rmask, other=0.0)[:, None]
            acc_dw += _sum(dy * tl.where(mask, x * rstd, 0.0), axis=0)
        if WANT_DB:
            acc_db += _sum(dy, axis=0)
    if WANT_DW:
        tl.store(pdw_ptr + pid_r * D + c, acc_dw, mask=cmask)
    if WANT_DB:
        tl.store(pdb_ptr + pid_r * D + c, acc_db, mask=cmask)


# --- launch configuration ----------------------------------------------------------------------

#: Largest tile the interpreter handles in one numpy step: few programs, few Python round trips.
_INTERPRETER_TILE = 1 << 16
#: Longest stretch of a row in one tile under the interpreter. Below a GPU's (4096) so that the
#: multi-tile schedule (Chan combination, two passes, the column kernel) runs from D = 1025 on,
#: at sizes the interpreter verifies in seconds.
_INTERPRETER_BLOCK_D = 1024
#: Longest stretch of a row in one tile on a GPU: a float32 row of 4096 in registers is 16 values
#: per thread at 8 warps, leaving room for the tile's temporaries without spilling.
_GPU_BLOCK_D = 4096
#: Elements per tile a GPU aims for when rows are short (several rows per program).
_GPU_TILE = 2048
#: Programs per SM a GPU's backward aims for (each writes one partial row of dweight/dbias).
_PROGRAMS_PER_SM = 4
#: Ranges of rows the interpreter splits the parameter gradients into (partial sums exercised).
_INTERPRETER_PROGRAMS = 4


@dataclass(frozen=True)
class RowConfig:
    """Tiling of M rows of D elements."""

    rows: int
    cols: int
    block_m: int
    block_d: int
    programs: int  # ranges of rows in the backward, one partial row of dweight/dbias each
    rows_per_program: int  # a multiple of block_m

    @property
    def one_block(self) -> bool:
        """A whole row fits one tile: no loop over its elements."""
        return self.cols <= self.block_d

    @property
    def num_warps(self) -> int:
        return max(1, min(8, self.block_m * self.block_d // 512))


def _power_of_two(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: give a positive int, or None")
    if value & (value - 1):
        raise ValueError(
            f"{name}={value}: Triton tiles are powers of two; use {triton.next_power_of_2(value)}"
        )


def row_config(
    m: int, d: int, *, block_d: int | None = None, programs: int | None = None
) -> RowConfig:
    """Tile shape and row split for M rows of D elements.

    On a GPU: rows up to 4096 elements in one tile, several short rows per tile (about 2048
    elements), about four backward programs per SM. Under the interpreter: rows up to 1024 in
    one tile and tiles up to 65536 elements (programs run one after another, in Python).
    ``block_d`` (a power of two) caps the elements of a row per tile, forcing the multi-tile
    schedule on short rows; ``programs`` asks for that many ranges of rows in the backward
    (fewer where M has too few tiles).
    """
    _power_of_two("block_d", block_d)
    if programs is not None and (isinstance(programs, bool) or programs < 1):
        raise ValueError(f"programs={programs!r}: give a positive number of row ranges, or None")
    p2 = triton.next_power_of_2
    cap = block_d or (_INTERPRETER_BLOCK_D if INTERPRETED else _GPU_BLOCK_D)
    bd = min(p2(max(d, 1)), cap)
    tile = _INTERPRETER_TILE if INTERPRETED else _GPU_TILE
    bm = max(1, min(p2(max(m, 1)), tile // bd))
    if programs is not None:
        # Tiles of few enough rows that M holds `programs` of them.
        bm = max(1, min(bm, 1 << (max(m // programs, 1).bit_length() - 1)))
    blocks = cdiv(max(m, 1), bm)
    if programs is not None:
        chosen = programs
    elif INTERPRETED:
        chosen = _INTERPRETER_PROGRAMS
    else:
        sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
        chosen = _PROGRAMS_PER_SM * sms
    rows_per_program = cdiv(blocks, min(chosen, blocks)) * bm
    return RowConfig(m, d, bm, bd, cdiv(max(m, 1), rows_per_program), rows_per_program)


# --- launchers -----------------------------------------------------------------------------------


def _f32(x: torch.Tensor, *shape: int) -> torch.Tensor:
    return torch.empty(shape, device=x.device, dtype=torch.float32)


def forward(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    eps: float,
    center: bool,
    residual: torch.Tensor | None = None,
    residual_out: torch.Tensor | None = None,
    block_d: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(y, mean, rstd) of the rows of the contiguous (M, D) matrix ``x``; mean (float32) only
    with ``center`` (LayerNorm), rstd float32. weight and bias: D values, any supported dtype.

    With ``residual`` (same shape and dtype as x) the rows normalised are s = x + residual,
    rounded to x's dtype and written to ``residual_out`` (which may be ``residual`` itself).
    """
    m, d = x.shape
    cfg = row_config(m, d, block_d=block_d)
    y = torch.empty_like(x)
    mean = _f32(x, m) if center else None
    rstd = _f32(x, m)
    add = residual is not None
    if m == 0 or d == 0:  # nothing to launch (a grid of 0 programs is an error)
        if add and d == 0:
            residual_out.copy_(x + residual)
        rstd.fill_(1.0 / (float(eps) ** 0.5) if eps > 0 else float("inf"))
        if mean is not None:
            mean.zero_()
        return y, mean, rstd
    _forward_kernel[(cdiv(m, cfg.block_m),)](
        x, residual if add else x, residual_out if add else x, y,
        weight if weight is not None else rstd, bias if bias is not None else rstd,
        mean if center else rstd, rstd, m, d, float(eps),
        CENTER=center, ADD_RESIDUAL=add, HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None, ONE_BLOCK=cfg.one_block, BLOCK_M=cfg.block_m,
        BLOCK_D=cfg.block_d, num_warps=cfg.num_warps,
    )  # fmt: skip
    return y, mean, rstd


@dataclass
class Grads:
    dx: torch.Tensor | None = None
    dweight: torch.Tensor | None = None  # float32, D values
    dbias: torch.Tensor | None = None  # float32, D values


def backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    mean: torch.Tensor | None,
    rstd: torch.Tensor,
    *,
    center: bool,
    dout: torch.Tensor | None = None,
    want_dx: bool = True,
    want_dweight: bool = False,
    want_dbias: bool = False,
    block_d: int | None = None,
    programs: int | None = None,
) -> Grads:
    """Gradients of y = (x - mean) rstd weight + bias over the rows of the (M, D) matrix ``x``
    (the normalised values: the rounded residual stream after a fused add). ``dy`` contiguous,
    x's shape. ``dout``: a gradient added to dx (the residual stream's own, after a fused add).
    dweight and dbias are float32 sums of per-range partial sums (deterministic)."""
    m, d = x.shape
    cfg = row_config(m, d, block_d=block_d, programs=programs)
    grads = Grads()
    if m == 0 or d == 0:  # empty sums: dweight and dbias are zeros, as torch's
        zeros = torch.zeros(d, device=x.device, dtype=torch.float32)
        dx = torch.zeros_like(x) if dout is None else dout.clone()
        return Grads(dx if want_dx else None, zeros if want_dweight else None,
                     zeros.clone() if want_dbias else None)  # fmt: skip
    dx = torch.empty_like(x) if want_dx else x
    w = weight if weight is not None else rstd
    mu = mean if center else rstd
    want_params = want_dweight or want_dbias
    pdw = _f32(x, cfg.programs, d) if want_dweight else rstd
    pdb = _f32(x, cfg.programs, d) if want_dbias else rstd
    if want_dx or (want_params and cfg.one_block):
        fused = want_params and cfg.one_block
        if fused:  # the kernel stores both partial rows; the unwanted one is dropped
            pdw = pdw if want_dweight else _f32(x, cfg.programs, d)
            pdb = pdb if want_dbias else _f32(x, cfg.programs, d)
        # One program per range of rows when it also reduces dweight/dbias; else one per tile.
        rpp = cfg.rows_per_program if fused else cfg.block_m
        _backward_kernel[(cdiv(m, rpp),)](
            dy, x, w, mu, rstd, dout if dout is not None else x, dx, pdw, pdb, m, d, rpp,
            CENTER=center, HAS_WEIGHT=weight is not None, ADD_GRAD=dout is not None,
            WANT_DX=want_dx, PARAM_GRADS=fused, ONE_BLOCK=cfg.one_block,
            BLOCK_M=cfg.block_m, BLOCK_D=cfg.block_d, num_warps=cfg.num_warps,
        )  # fmt: skip
    if want_params and not cfg.one_block:
        _param_grads_kernel[(cdiv(d, cfg.block_d), cfg.programs)](
            dy, x, mu, rstd, pdw, pdb, m, d, cfg.rows_per_program,
            CENTER=center, WANT_DW=want_dweight, WANT_DB=want_dbias, BLOCK_M=cfg.block_m,
            BLOCK_D=cfg.block_d, num_warps=cfg.num_warps,
        )  # fmt: skip
    grads.dx = dx if want_dx else None
    grads.dweight = pdw.sum(dim=0) if want_dweight else None
    grads.dbias = pdb.sum(dim=0) if want_dbias else None
    return grads


__all__ = ["Grads", "RowConfig", "backward", "forward", "row_config"]

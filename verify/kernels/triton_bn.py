"""Triton kernels for training-mode batch norm, its backward, and a fused residual tail.

A 4-D tensor is viewed as a matrix of M = N*H*W rows (the values a channel is reduced over) and C
channel columns. Two dense layouts are handled, told apart by a compile-time flag:

- NCHW (``torch.contiguous_format``): element (r, c) lives at ``(r // S) C S + c S + r % S``,
  S = H*W;
- channels_last: element (r, c) lives at ``r C + c``.

Any other strides are made dense first by the caller (:func:`dense`). Reduction tiles are
[BLOCK_C, BLOCK_R] in both layouts, reduced along axis 1.

Statistics: every tile is reduced by two passes over registers (the tile's mean, then the sum of
squared deviations from it), in float32 whatever the storage type, and folded into the running
(count, mean, M2) of its channels by Chan, Golub & LeVeque's pairwise update. Error: two-pass
within a tile, O(u) per combination step; no E[x^2] - E[x]^2 anywhere.

Two schedules, the same arithmetic:

- one program per block of channels over all M rows (``split == 1``): the forward computes the
  statistics and normalises in one kernel (reading x twice), the backward computes its two sums
  and dx in one kernel. Used when the channel blocks alone fill the machine, and always under the
  interpreter (one launch instead of three).
- ``split`` programs per block of channels, each over a range of rows (a GPU needs that
  parallelism when C is small and N*H*W large): partial (count, mean, M2) or partial sums, a
  combine step, then an elementwise kernel with one program per tile (eval mode uses that one
  alone). ``split`` forces this schedule at any size, so the interpreter verifies it on the CPU
  too.
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


@triton.jit
def _tile(
    r0, c0, row_end, C, S, CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr
):
    """Offsets and mask of the [BLOCK_C, BLOCK_R] tile of channels [c0, c0 + BLOCK_C) and rows
    [r0, r0 + BLOCK_R): channel-major in both layouts, so every reduction runs along axis 1.
    (Triton orders a tile's layout by the contiguity it can prove, so a channels_last tile is
    still read along its contiguous channels; the interpreter's numpy sums along a contiguous
    last axis pairwise, not element after element.)"""
    c = c0 + tl.arange(0, BLOCK_C)[:, None]
    r = r0 + tl.arange(0, BLOCK_R)[None, :]
    if CHANNELS_LAST:  # noqa: SIM108 - a constexpr branch: Triton compiles only one side
        offs = r * C + c
    else:
        offs = (r // S) * (C * S) + c * S + r % S
    return offs, (r < row_end) & (c < C)


@triton.jit
def _chan(count, mean, m2, n_b, mean_b, m2_b):
    """Chan, Golub & LeVeque's update: (count, mean, M2) of the union of two sets."""
    n = count + n_b
    w_b = tl.where(n > 0, n_b / tl.where(n > 0, n, 1.0), 0.0)
    delta = mean_b - mean
    return n, mean + delta * w_b, m2 + m2_b + delta * delta * (count * w_b)


@triton.jit
def _row_stats(
    x_ptr, c0, start, end, C, S,
    CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """(count, mean, M2) per channel over rows [start, end): tile-wise two-pass, Chan-combined."""
    count = tl.full([BLOCK_C], 0.0, tl.float32)
    mean = tl.full([BLOCK_C], 0.0, tl.float32)
    m2 = tl.full([BLOCK_C], 0.0, tl.float32)
    for r0 in range(start, end, BLOCK_R):
        offs, mask = _tile(r0, c0, end, C, S, CHANNELS_LAST, BLOCK_R, BLOCK_C)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        n_b = tl.full([BLOCK_C], 0.0, tl.float32) + tl.minimum(end - r0, BLOCK_R).to(tl.float32)
        mean_b = tl.div_rn(_sum(x, axis=1), n_b)
        d = tl.where(mask, x - mean_b[:, None], 0.0)
        count, mean, m2 = _chan(count, mean, m2, n_b, mean_b, _sum(d * d, axis=1))
    return count, mean, m2


@triton.jit
def _finish_stats(
    count, mean, m2, c, cmask, mean_ptr, rstd_ptr, rmean_ptr, rvar_ptr, eps, factor,
    UPDATE_RUNNING: tl.constexpr,
):  # fmt: skip
    """Store mean and rstd = 1/sqrt(var + eps) (biased var) and return rstd; update the running
    statistics with the unbiased variance: running = (1 - factor) running + factor batch."""
    var = tl.div_rn(m2, tl.where(count > 0, count, 1.0))
    rstd = tl.div_rn(1.0, tl.sqrt_rn(var + eps))
    tl.store(mean_ptr + c, mean, mask=cmask)
    tl.store(rstd_ptr + c, rstd, mask=cmask)
    if UPDATE_RUNNING:
        rm = tl.load(rmean_ptr + c, mask=cmask, other=0.0).to(tl.float32)
        rv = tl.load(rvar_ptr + c, mask=cmask, other=0.0).to(tl.float32)
        unbiased = tl.div_rn(m2, tl.where(count > 1, count - 1.0, 1.0))
        rm = (1.0 - factor) * rm + factor * mean
        rv = (1.0 - factor) * rv + factor * unbiased
        tl.store(rmean_ptr + c, rm.to(rmean_ptr.dtype.element_ty), mask=cmask)
        tl.store(rvar_ptr + c, rv.to(rvar_ptr.dtype.element_ty), mask=cmask)
    return rstd


@triton.jit
def _normalized(
    x, mean, rstd, w, b, res, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    ADD_RESIDUAL: tl.constexpr, RELU: tl.constexpr,
):  # fmt: skip
    """(x - mean) rstd [w] [+ b] [+ res] [ReLU], float32."""
    y = (x - mean) * rstd
    if HAS_WEIGHT:
        y = y * w
    if HAS_BIAS:
        y = y + b
    if ADD_RESIDUAL:
        y = y + res
    if RELU:
        # Not tl.maximum: on a GPU max(NaN, 0) is 0, and a NaN must come out as NaN (torch.relu).
        y = tl.where(y < 0.0, 0.0, y)
    return y


@triton.jit
def _grad(dy_ptr, out_ptr, offs, mask, RELU_MASK: tl.constexpr):
    """The gradient reaching the batch norm: dy, or dy relu'(out) behind the fused tail."""
    g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if RELU_MASK:
        out = tl.load(out_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.where(out > 0.0, g, 0.0)
    return g


@triton.jit
def _row_grad_sums(
    dy_ptr, x_ptr, out_ptr, mean, rstd, c0, start, end, C, S,
    CHANNELS_LAST: tl.constexpr, RELU_MASK: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """sum(g) and sum(g x_hat) per channel over rows [start, end) (mean, rstd: [BLOCK_C, 1]).

    Whole tiles are added in the loop and reduced once after it. (A reduction inside the loop
    whose sum is used twice after it, as the backward kernel uses sum(g), stops Triton 3.6's
    TritonGPUOptimizeThreadLocality pass: "Assertion `loopResult.hasOneUse()' failed", seen on
    an H200; the interpreter runs either form.)"""
    acc_dy = tl.full([BLOCK_C, BLOCK_R], 0.0, tl.float32)
    acc_dyx = tl.full([BLOCK_C, BLOCK_R], 0.0, tl.float32)
    for r0 in range(start, end, BLOCK_R):
        offs, mask = _tile(r0, c0, end, C, S, CHANNELS_LAST, BLOCK_R, BLOCK_C)
        g = _grad(dy_ptr, out_ptr, offs, mask, RELU_MASK)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        acc_dy += g
        acc_dyx += tl.where(mask, g * ((x - mean) * rstd), 0.0)
    return _sum(acc_dy, axis=1), _sum(acc_dyx, axis=1)


@triton.jit
def _store_normalized(
    x_ptr, y_ptr, res_ptr, offs, mask, mean, rstd, w, b,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ADD_RESIDUAL: tl.constexpr,
    RELU: tl.constexpr,
):  # fmt: skip
    """One tile of the output (per-channel values as [BLOCK_C, 1] columns)."""
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    res = 0.0
    if ADD_RESIDUAL:
        res = tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = _normalized(x, mean, rstd, w, b, res, HAS_WEIGHT, HAS_BIAS, ADD_RESIDUAL, RELU)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _store_grads(
    dy_ptr, x_ptr, out_ptr, dx_ptr, dres_ptr, offs, mask, mean, rstd, scale, mdy, mdyx,
    BATCH_STATS: tl.constexpr, RELU_MASK: tl.constexpr, WRITE_DX: tl.constexpr,
    WRITE_DRES: tl.constexpr,
):  # fmt: skip
    """One tile of dx = scale (g - mean(g) - x_hat mean(g x_hat)) (batch statistics) or
    scale g (running statistics), scale = gamma rstd; and of the shortcut's gradient g."""
    g = _grad(dy_ptr, out_ptr, offs, mask, RELU_MASK)
    if WRITE_DRES:
        tl.store(dres_ptr + offs, g.to(dres_ptr.dtype.element_ty), mask=mask)
    if WRITE_DX:
        if BATCH_STATS:
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dx = (g - mdy - (x - mean) * rstd * mdyx) * scale
        else:
            dx = g * scale
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _affine_columns(
    w_ptr, b_ptr, c, cmask, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
):  # fmt: skip
    """gamma and beta of BLOCK_C channels as [BLOCK_C, 1] columns (1 and 0 without them)."""
    w = 1.0
    if HAS_WEIGHT:
        w = tl.load(w_ptr + c, mask=cmask, other=1.0).to(tl.float32)[:, None]
    b = 0.0
    if HAS_BIAS:
        b = tl.load(b_ptr + c, mask=cmask, other=0.0).to(tl.float32)[:, None]
    return w, b


# --- one program per channel block: the whole forward, the whole backward ---------------------


@triton.jit
def _forward_kernel(
    x_ptr, y_ptr, res_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, rmean_ptr, rvar_ptr,
    M, C, S, eps, factor,
    CHANNELS_LAST: tl.constexpr, UPDATE_RUNNING: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr, ADD_RESIDUAL: tl.constexpr, RELU: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Batch statistics of BLOCK_C channels, then their normalised output (+ shortcut, ReLU)."""
    c0 = tl.program_id(0) * BLOCK_C
    c = c0 + tl.arange(0, BLOCK_C)
    cmask = c < C
    count, mean, m2 = _row_stats(x_ptr, c0, 0, M, C, S, CHANNELS_LAST, BLOCK_R, BLOCK_C)
    rstd = _finish_stats(
        count, mean, m2, c, cmask, mean_ptr, rstd_ptr, rmean_ptr, rvar_ptr, eps, factor,
        UPDATE_RUNNING,
    )  # fmt: skip
    w, b = _affine_columns(w_ptr, b_ptr, c, cmask, HAS_WEIGHT, HAS_BIAS)
    for r0 in range(0, M, BLOCK_R):
        offs, mask = _tile(r0, c0, M, C, S, CHANNELS_LAST, BLOCK_R, BLOCK_C)
        _store_normalized(
            x_ptr, y_ptr, res_ptr, offs, mask, mean[:, None], rstd[:, None], w, b, HAS_WEIGHT,
            HAS_BIAS, ADD_RESIDUAL, RELU,
        )  # fmt: skip


@triton.jit
def _backward_kernel(
    dy_ptr, x_ptr, out_ptr, mean_ptr, rstd_ptr, w_ptr, dx_ptr, dres_ptr, sdy_ptr, sdyx_ptr,
    M, C, S, inv_m,
    CHANNELS_LAST: tl.constexpr, HAS_WEIGHT: tl.constexpr, RELU_MASK: tl.constexpr,
    WRITE_DX: tl.constexpr, WRITE_DRES: tl.constexpr, WRITE_ANY: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """sum(g), sum(g x_hat) of BLOCK_C channels (dbeta, dgamma), then
    dx = gamma rstd (g - mean(g) - x_hat mean(g x_hat)); the fused tail's shortcut gets g."""
    c0 = tl.program_id(0) * BLOCK_C
    c = c0 + tl.arange(0, BLOCK_C)
    cmask = c < C
    mean = tl.load(mean_ptr + c, mask=cmask, other=0.0)[:, None]
    rstd = tl.load(rstd_ptr + c, mask=cmask, other=0.0)[:, None]
    sdy, sdyx = _row_grad_sums(
        dy_ptr, x_ptr, out_ptr, mean, rstd, c0, 0, M, C, S, CHANNELS_LAST, RELU_MASK, BLOCK_R,
        BLOCK_C,
    )  # fmt: skip
    tl.store(sdy_ptr + c, sdy, mask=cmask)
    tl.store(sdyx_ptr + c, sdyx, mask=cmask)
    scale = rstd
    if HAS_WEIGHT:
        scale = rstd * tl.load(w_ptr + c, mask=cmask, other=1.0).to(tl.float32)[:, None]
    mdy = (sdy * inv_m)[:, None]
    mdyx = (sdyx * inv_m)[:, None]
    if WRITE_ANY:
        for r0 in range(0, M, BLOCK_R):
            offs, mask = _tile(r0, c0, M, C, S, CHANNELS_LAST, BLOCK_R, BLOCK_C)
            _store_grads(
                dy_ptr, x_ptr, out_ptr, dx_ptr, dres_ptr, offs, mask, mean, rstd, scale, mdy,
                mdyx, True, RELU_MASK, WRITE_DX, WRITE_DRES,
            )  # fmt: skip


# --- split programs per channel block: partial reductions, combine, elementwise ---------------


@triton.jit
def _stats_partial_kernel(
    x_ptr, count_ptr, pmean_ptr, pm2_ptr, M, C, S, rows_per_split,
    CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """(count, mean, M2) of BLOCK_C channels over one range of rows."""
    pid_s = tl.program_id(1)
    c0 = tl.program_id(0) * BLOCK_C
    start = pid_s * rows_per_split
    end = tl.minimum(start + rows_per_split, M)
    count, mean, m2 = _row_stats(x_ptr, c0, start, end, C, S, CHANNELS_LAST, BLOCK_R, BLOCK_C)
    c = c0 + tl.arange(0, BLOCK_C)
    cmask = c < C
    tl.store(count_ptr + pid_s * C + c, count, mask=cmask)
    tl.store(pmean_ptr + pid_s * C + c, mean, mask=cmask)
    tl.store(pm2_ptr + pid_s * C + c, m2, mask=cmask)


@triton.jit
def _stats_combine_kernel(
    count_ptr, pmean_ptr, pm2_ptr, mean_ptr, rstd_ptr, rmean_ptr, rvar_ptr,
    C, SPLIT, eps, factor, UPDATE_RUNNING: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Combine SPLIT partial (count, mean, M2) rows by Chan's update; mean, rstd, running."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    count = tl.full([BLOCK_C], 0.0, tl.float32)
    mean = tl.full([BLOCK_C], 0.0, tl.float32)
    m2 = tl.full([BLOCK_C], 0.0, tl.float32)
    for s in range(0, SPLIT):
        n_b = tl.load(count_ptr + s * C + c, mask=cmask, other=0.0)
        mean_b = tl.load(pmean_ptr + s * C + c, mask=cmask, other=0.0)
        m2_b = tl.load(pm2_ptr + s * C + c, mask=cmask, other=0.0)
        count, mean, m2 = _chan(count, mean, m2, n_b, mean_b, m2_b)
    _finish_stats(
        count, mean, m2, c, cmask, mean_ptr, rstd_ptr, rmean_ptr, rvar_ptr, eps, factor,
        UPDATE_RUNNING,
    )  # fmt: skip


@triton.jit
def _apply_kernel(
    x_ptr, y_ptr, res_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, M, C, S,
    CHANNELS_LAST: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    ADD_RESIDUAL: tl.constexpr, RELU: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """One [BLOCK_C, BLOCK_R] tile of the output, given per-channel mean and rstd."""
    c0 = tl.program_id(0) * BLOCK_C
    c = c0 + tl.arange(0, BLOCK_C)
    cmask = c < C
    mean = tl.load(mean_ptr + c, mask=cmask, other=0.0)[:, None]
    rstd = tl.load(rstd_ptr + c, mask=cmask, other=0.0)[:, None]
    w, b = _affine_columns(w_ptr, b_ptr, c, cmask, HAS_WEIGHT, HAS_BIAS)
    offs, mask = _tile(tl.program_id(1) * BLOCK_R, c0, M, C, S, CHANNELS_LAST, BLOCK_R, BLOCK_C)
    _store_normalized(
        x_ptr, y_ptr, res_ptr, offs, mask, mean, rstd, w, b, HAS_WEIGHT, HAS_BIAS, ADD_RESIDUAL,
        RELU,
    )  # fmt: skip


@triton.jit
def _grad_sums_partial_kernel(
    dy_ptr, x_ptr, out_ptr, mean_ptr, rstd_ptr, sdy_ptr, sdyx_ptr, M, C, S, rows_per_split,
    CHANNELS_LAST: tl.constexpr, RELU_MASK: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """sum(g) and sum(g x_hat) of BLOCK_C channels over one range of rows."""
    pid_s = tl.program_id(1)
    c0 = tl.program_id(0) * BLOCK_C
    c = c0 + tl.arange(0, BLOCK_C)
    cmask = c < C
    mean = tl.load(mean_ptr + c, mask=cmask, other=0.0)[:, None]
    rstd = tl.load(rstd_ptr + c, mask=cmask, other=0.0)[:, None]
    start = pid_s * rows_per_split
    end = tl.minimum(start + rows_per_split, M)
    sdy, sdyx = _row_grad_sums(
        dy_ptr, x_ptr, out_ptr, mean, rstd, c0, start, end, C, S, CHANNELS_LAST, RELU_MASK,
        BLOCK_R, BLOCK_C,
    )  # fmt: skip
    tl.store(sdy_ptr + pid_s * C + c, sdy, mask=cmask)
    tl.store(sdyx_ptr + pid_s * C + c, sdyx, mask=cmask)


@triton.jit
def _dx_kernel(
    dy_ptr, x_ptr, out_ptr, dx_ptr, dres_ptr, mean_ptr, rstd_ptr, w_ptr, sdy_ptr, sdyx_ptr,
    M, C, S, inv_m,
    CHANNELS_LAST: tl.constexpr, HAS_WEIGHT: tl.constexpr, BATCH_STATS: tl.constexpr,
    RELU_MASK: tl.constexpr, WRITE_DX: tl.constexpr, WRITE_DRES: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """One [BLOCK_C, BLOCK_R] tile of dx (and of the fused tail's shortcut gradient), given the
    per-channel sums of the gradient (batch statistics) or none (running statistics)."""
    c0 = tl.program_id(0) * BLOCK_C
    c = c0 + tl.arange(0, BLOCK_C)
    cmask = c < C
    mean = tl.load(mean_ptr + c, mask=cmask, other=0.0)[:, None]
    rstd = tl.load(rstd_ptr + c, mask=cmask, other=0.0)[:, None]
    scale = rstd
    if HAS_WEIGHT:
        scale = rstd * tl.load(w_ptr + c, mask=cmask, other=1.0).to(tl.float32)[:, None]
    mdy = 0.0
    mdyx = 0.0
    if BATCH_STATS:
        mdy = (tl.load(sdy_ptr + c, mask=cmask, other=0.0) * inv_m)[:, None]
        mdyx = (tl.load(sdyx_ptr + c, mask=cmask, other=0.0) * inv_m)[:, None]
    offs, mask = _tile(tl.program_id(1) * BLOCK_R, c0, M, C, S, CHANNELS_LAST, BLOCK_R, BLOCK_C)
    _store_grads(
        dy_ptr, x_ptr, out_ptr, dx_ptr, dres_ptr, offs, mask, mean, rstd, scale, mdy, mdyx,
        BATCH_STATS, RELU_MASK, WRITE_DX, WRITE_DRES,
    )  # fmt: skip


# --- launch configuration ----------------------------------------------------------------------

#: Largest tile the interpreter handles in one numpy step: few programs, few Python round trips.
_INTERPRETER_TILE = 1 << 16
#: Warps per program on a GPU (tiles of 4096 elements: 32 per thread, 128-bit accesses).
_GPU_WARPS = 4
#: Programs per SM a GPU reduction aims for.
_PROGRAMS_PER_SM = 4


@dataclass(frozen=True)
class ReduceConfig:
    """Tiling of a per-channel reduction over M rows and C channels."""

    channels: int
    block_r: int
    block_c: int
    split: int  # ranges of rows per channel block (programs along grid axis 1)
    rows_per_split: int  # a multiple of block_r, so no tile straddles two ranges

    @property
    def grid(self) -> tuple[int, int]:
        return (cdiv(self.channels, self.block_c), self.split)


def _sm_count() -> int:
    return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count


def reduce_config(m: int, c: int, *, channels_last: bool, split: int | None = None) -> ReduceConfig:
    """Tile shape and row split. On a GPU: about four programs per SM, wide tiles along the
    contiguous axis (rows for NCHW, channels for channels_last). Under the interpreter: the
    largest tiles and one range of rows (programs run one after another, in Python).
    ``split`` asks for that many ranges of rows per channel block (fewer where M is too small
    for them): it forces the multi-program schedule."""
    if split is not None and (isinstance(split, bool) or split < 1):
        raise ValueError(f"split={split!r}: give a positive number of row ranges, or None")
    p2 = triton.next_power_of_2
    if INTERPRETED:
        block_c = min(p2(c), 64)
        block_r = max(16, min(p2(m), _INTERPRETER_TILE // block_c))
        chosen = 1
    else:
        block_c = min(p2(c), 64) if channels_last else min(p2(c), 4)
        block_r = max(16, 4096 // block_c) if channels_last else max(16, min(p2(m), 1024))
        programs = _PROGRAMS_PER_SM * _sm_count()
        chosen = max(1, min(cdiv(m, block_r), programs // cdiv(c, block_c)))
    if split is not None:
        # Tiles small enough that M holds `split` of them.
        block_r = max(16, min(block_r, 1 << (max(m // split, 1).bit_length() - 1)))
        chosen = split
    rows_per_split = cdiv(cdiv(m, block_r), chosen) * block_r
    return ReduceConfig(c, block_r, block_c, cdiv(m, rows_per_split), rows_per_split)


# --- launchers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """The dense view a kernel sees: rows M = N*H*W, channels C, spatial size S = H*W."""

    m: int
    c: int
    s: int
    channels_last: bool

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def dense(x: torch.Tensor) -> tuple[torch.Tensor, Layout]:
    """``x`` in a layout the kernels read: NCHW or channels_last, dense; other strides are copied
    to NCHW (torch's batch norm also returns a contiguous output for such input)."""
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    if not channels_last:
        x = x.contiguous()
    if x.numel() >= 2**31:
        raise ValueError(
            f"input of {x.numel()} elements: the kernels index with 32-bit offsets; keep one "
            f"batch below 2**31 elements (split it)"
        )
    n, c, h, w = x.shape
    return x, Layout(m=n * h * w, c=c, s=h * w, channels_last=channels_last)


def like(t: torch.Tensor, layout: Layout) -> torch.Tensor:
    """``t`` (same shape as the input) in the input's dense layout."""
    return t.contiguous(memory_format=layout.memory_format)


def _tiles(cfg: ReduceConfig, layout: Layout) -> tuple[int, int]:
    """Grid of the elementwise kernels: one program per [BLOCK_C, BLOCK_R] tile."""
    return (cfg.grid[0], cdiv(layout.m, cfg.block_r))


def _f32(layout: Layout, x: torch.Tensor, *shape: int) -> torch.Tensor:
    return torch.empty(shape or (layout.c,), device=x.device, dtype=torch.float32)


def forward(
    x: torch.Tensor,
    layout: Layout,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    eps: float,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    factor: float = 0.0,
    residual: torch.Tensor | None = None,
    relu: bool = False,
    split: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training forward with batch statistics: (y, mean, rstd), mean and rstd in float32.

    y = (x - mean) rstd weight + bias [+ residual] [ReLU], in x's dtype and layout. The running
    statistics, when given, are updated in place with the unbiased variance.
    """
    cfg = reduce_config(layout.m, layout.c, channels_last=layout.channels_last, split=split)
    y = torch.empty_like(x)
    mean, rstd = _f32(layout, x), _f32(layout, x)
    update = running_mean is not None
    rm, rv = (running_mean, running_var) if update else (mean, rstd)
    w = weight if weight is not None else mean
    b = bias if bias is not None else mean
    res = residual if residual is not None else x
    flags = dict(
        CHANNELS_LAST=layout.channels_last, HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None, ADD_RESIDUAL=residual is not None, RELU=relu,
    )  # fmt: skip
    if cfg.split == 1:
        _forward_kernel[(cfg.grid[0],)](
            x, y, res, w, b, mean, rstd, rm, rv, layout.m, layout.c, layout.s, float(eps),
            float(factor), UPDATE_RUNNING=update, BLOCK_R=cfg.block_r, BLOCK_C=cfg.block_c,
            num_warps=_GPU_WARPS, **flags,
        )  # fmt: skip
        return y, mean, rstd
    parts = [_f32(layout, x, cfg.split, layout.c) for _ in range(3)]
    _stats_partial_kernel[cfg.grid](
        x, *parts, layout.m, layout.c, layout.s, cfg.rows_per_split,
        CHANNELS_LAST=layout.channels_last, BLOCK_R=cfg.block_r, BLOCK_C=cfg.block_c,
        num_warps=_GPU_WARPS,
    )  # fmt: skip
    block_c = min(triton.next_power_of_2(layout.c), 256)
    _stats_combine_kernel[(cdiv(layout.c, block_c),)](
        *parts, mean, rstd, rm, rv, layout.c, cfg.split, float(eps), float(factor),
        UPDATE_RUNNING=update, BLOCK_C=block_c,
    )  # fmt: skip
    _apply_kernel[_tiles(cfg, layout)](
        x, y, res, mean, rstd, w, b, layout.m, layout.c, layout.s, BLOCK_R=cfg.block_r,
        BLOCK_C=cfg.block_c, num_warps=_GPU_WARPS, **flags,
    )  # fmt: skip
    return y, mean, rstd


def normalize(
    x: torch.Tensor,
    layout: Layout,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    residual: torch.Tensor | None = None,
    relu: bool = False,
) -> torch.Tensor:
    """y = (x - mean) rstd weight + bias [+ residual] [ReLU] with given (running) statistics."""
    y = torch.empty_like(x)
    cfg = reduce_config(layout.m, layout.c, channels_last=layout.channels_last)
    _apply_kernel[_tiles(cfg, layout)](
        x, y, residual if residual is not None else x, mean, rstd,
        weight if weight is not None else mean, bias if bias is not None else mean,
        layout.m, layout.c, layout.s,
        CHANNELS_LAST=layout.channels_last, HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None, ADD_RESIDUAL=residual is not None, RELU=relu,
        BLOCK_R=cfg.block_r, BLOCK_C=cfg.block_c, num_warps=_GPU_WARPS,
    )  # fmt: skip
    return y


@dataclass
class Grads:
    dx: torch.Tensor | None = None
    dres: torch.Tensor | None = None  # the fused tail's shortcut gradient
    sum_dy: torch.Tensor | None = None  # dbeta, float32
    sum_dy_xhat: torch.Tensor | None = None  # dgamma, float32


def backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    layout: Layout,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    weight: torch.Tensor | None,
    *,
    batch_stats: bool,
    out: torch.Tensor | None = None,
    want_dx: bool = True,
    want_dres: bool = False,
    want_sums: bool = True,
    split: int | None = None,
) -> Grads:
    """Gradients of y = (x - mean) rstd weight + bias [+ res] [ReLU, whose output is ``out``].

    ``dy`` must be in x's dense layout. With ``batch_stats`` mean and rstd depend on x (training
    mode); otherwise they are the running statistics' and dx = weight rstd g.
    """
    cfg = reduce_config(layout.m, layout.c, channels_last=layout.channels_last, split=split)
    grads = Grads()
    dx = torch.empty_like(x) if want_dx else x
    dres = torch.empty_like(dy) if want_dres else x
    o = out if out is not None else x
    w = weight if weight is not None else mean
    relu_mask = out is not None
    if batch_stats and cfg.split == 1:
        sdy, sdyx = _f32(layout, x), _f32(layout, x)
        _backward_kernel[(cfg.grid[0],)](
            dy, x, o, mean, rstd, w, dx, dres, sdy, sdyx, layout.m, layout.c, layout.s,
            1.0 / layout.m, CHANNELS_LAST=layout.channels_last, HAS_WEIGHT=weight is not None,
            RELU_MASK=relu_mask, WRITE_DX=want_dx, WRITE_DRES=want_dres,
            WRITE_ANY=want_dx or want_dres, BLOCK_R=cfg.block_r,
            BLOCK_C=cfg.block_c, num_warps=_GPU_WARPS,
        )  # fmt: skip
        grads.sum_dy, grads.sum_dy_xhat = sdy, sdyx
    else:
        sdy = sdyx = mean  # unused without batch statistics
        if (batch_stats and want_dx) or want_sums:
            psdy = _f32(layout, x, cfg.split, layout.c)
            psdyx = _f32(layout, x, cfg.split, layout.c)
            _grad_sums_partial_kernel[cfg.grid](
                dy, x, o, mean, rstd, psdy, psdyx, layout.m, layout.c, layout.s,
                cfg.rows_per_split, CHANNELS_LAST=layout.channels_last, RELU_MASK=relu_mask,
                BLOCK_R=cfg.block_r, BLOCK_C=cfg.block_c, num_warps=_GPU_WARPS,
            )  # fmt: skip
            sdy, sdyx = psdy.sum(dim=0), psdyx.sum(dim=0)
            grads.sum_dy, grads.sum_dy_xhat = sdy, sdyx
        if want_dx or want_dres:
            _dx_kernel[_tiles(cfg, layout)](
                dy, x, o, dx, dres, mean, rstd, w, sdy, sdyx, layout.m, layout.c, layout.s,
                1.0 / layout.m, CHANNELS_LAST=layout.channels_last,
                HAS_WEIGHT=weight is not None, BATCH_STATS=batch_stats, RELU_MASK=relu_mask,
                WRITE_DX=want_dx, WRITE_DRES=want_dres, BLOCK_R=cfg.block_r,
                BLOCK_C=cfg.block_c, num_warps=_GPU_WARPS,
            )  # fmt: skip
    grads.dx = dx if want_dx else None
    grads.dres = dres if want_dres else None
    return grads


__all__ = [
    "Grads",
    "Layout",
    "ReduceConfig",
    "backward",
    "dense",
    "forward",
    "like",
    "normalize",
    "reduce_config",
]

"""Triton kernels of the RMS norm and of Mamba2's gated RMS norm (`reference.py`).

Memory-bound. Both norms work on rows of G channels: the whole width for RMSNorm, one group of
the gated norm (NG = dim / G groups side by side in a row of the (M, dim) input). The forward
reads x (and z) once, computes h = x (or x * silu(z)), rstd = 1 / sqrt(mean(h^2) + eps) and
out = h * rstd * w in fp32 registers, writes out in its dtype and rstd (M, NG) fp32 for the
backward. A program takes a tile of BLOCK_M rows x one group, so short rows (per-head norms of
64 channels) still give each program a few KB to move.

The backward recomputes h from x and z (cheaper than storing it) and, with n = h * rstd and
dn = dout * w,

    dh = rstd * (dn - n * mean(dn * n)),   dx = dh * silu(z),   dz = dh * x * silu'(z),
    silu'(z) = sigmoid(z) * (1 + z * (1 - sigmoid(z))),          dw = sum_rows dout * n.

Each backward program walks a contiguous range of rows (a few programs per SM) and keeps its
share of dw in registers; it writes one fp32 row of partial sums, which the launcher adds in a
fixed order: deterministic, no atomics.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def norm_fwd_kernel(
    x_ptr, z_ptr, w_ptr, out_ptr, rstd_ptr,
    M, NG, s_x, s_z, s_out, eps,
    G: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, HAS_Z: tl.constexpr,
):
    """Grid (cdiv(M, BLOCK_M), NG). x, z, out: (M, NG * G) with row strides s_* and unit column
    stride; w: (NG * G,); rstd: (M, NG) fp32 contiguous. BLOCK_D = next_power_of_2(G)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    g = tl.program_id(1)
    cols = tl.arange(0, BLOCK_D)
    rmask = rows < M
    cmask = cols < G
    mask = rmask[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)[:, None]  # row offsets of > 2^31 elements stay exact
    ch = (g * G + cols)[None, :]
    h = tl.load(x_ptr + r64 * s_x + ch, mask=mask, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + r64 * s_z + ch, mask=mask, other=0.0).to(tl.float32)
        h = h * (z * tl.sigmoid(z))
    rstd = 1.0 / tl.sqrt(tl.sum(h * h, axis=1) / G + eps)
    w = tl.load(w_ptr + g * G + cols, mask=cmask, other=0.0).to(tl.float32)
    out = h * rstd[:, None] * w[None, :]
    tl.store(out_ptr + r64 * s_out + ch, out.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + rows.to(tl.int64) * NG + g, rstd, mask=rmask)


@triton.jit
def norm_bwd_kernel(
    x_ptr, z_ptr, w_ptr, dout_ptr, rstd_ptr, dx_ptr, dz_ptr, dw_part_ptr, dres_ptr,
    M, NG, s_x, s_z, s_dout, s_dx, s_dz, s_dres,
    G: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, TILES: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_DRES: tl.constexpr, dext_ptr=None, s_dext=0, HAS_DEXT: tl.constexpr = False,
    dlow_ptr=None, s_dlow=0, HAS_LOW: tl.constexpr = False,
):
    """Grid (cdiv(M, TILES * BLOCK_M), NG). Program (p, g) takes TILES tiles of BLOCK_M rows of
    group g from row p * TILES * BLOCK_M on and writes dw_part[p, g*G:(g+1)*G] (dw_part: fp32
    (grid[0], NG * G) contiguous). TILES is a compile-time loop bound (the launcher rounds it to
    a power of 2). Layouts as the forward; dx, dz like x, z. HAS_DRES (RMSNorm only): dres, like
    x, is added into dx (the residual stream's gradient: `op.residual_add`). HAS_DEXT: dext, like
    dout, is added to dout (a second consumer's gradient of the output: `op.GradHolder`). HAS_LOW
    (RMSNorm only): dx is also stored in dlow's dtype (rounded to nearest), the gradient of the
    previous block's bf16 mixer output (`op._ResidualAdd`'s backward), with no cast pass over dx."""
    p = tl.program_id(0)
    g = tl.program_id(1)
    cols = tl.arange(0, BLOCK_D)
    cmask = cols < G
    ch = (g * G + cols)[None, :]
    w = tl.load(w_ptr + g * G + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    dw = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for i in range(TILES):
        rows = (p * TILES + i) * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows < M
        mask = rmask[:, None] & cmask[None, :]
        r64 = rows.to(tl.int64)[:, None]
        x = tl.load(x_ptr + r64 * s_x + ch, mask=mask, other=0.0).to(tl.float32)
        dout = tl.load(dout_ptr + r64 * s_dout + ch, mask=mask, other=0.0).to(tl.float32)
        if HAS_DEXT:
            dout += tl.load(dext_ptr + r64 * s_dext + ch, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows.to(tl.int64) * NG + g, mask=rmask, other=0.0)[:, None]
        if HAS_Z:
            z = tl.load(z_ptr + r64 * s_z + ch, mask=mask, other=0.0).to(tl.float32)
            sg = tl.sigmoid(z)
            gate = z * sg
            n = x * gate * rstd
        else:
            n = x * rstd
        dw += dout * n
        dn = dout * w
        dh = (dn - n * (tl.sum(dn * n, axis=1) / G)[:, None]) * rstd
        if HAS_Z:
            tl.store(dx_ptr + r64 * s_dx + ch, (dh * gate).to(dx_ptr.dtype.element_ty), mask=mask)
            dz = dh * x * sg * (1.0 + z * (1.0 - sg))
            tl.store(dz_ptr + r64 * s_dz + ch, dz.to(dz_ptr.dtype.element_ty), mask=mask)
        else:
            if HAS_DRES:
                dh += tl.load(dres_ptr + r64 * s_dres + ch, mask=mask, other=0.0).to(tl.float32)
            tl.store(dx_ptr + r64 * s_dx + ch, dh.to(dx_ptr.dtype.element_ty), mask=mask)
            if HAS_LOW:
                tl.store(dlow_ptr + r64 * s_dlow + ch, dh.to(dlow_ptr.dtype.element_ty, fp_downcast_rounding="rtne"),
                         mask=mask)
    tl.store(dw_part_ptr + p * (NG * G) + g * G + cols, tl.sum(dw, axis=0), mask=cmask)


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """out = x + y over n contiguous elements, in fp32, stored in out's dtype (the residual
    stream's fp32 x plus a bf16 mixer output: torch's add of mixed dtypes runs its unvectorised
    kernel, ~1.6x this one's floor on an H200, docs/benchmarks.md)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (x + y).to(out_ptr.dtype.element_ty), mask=mask)

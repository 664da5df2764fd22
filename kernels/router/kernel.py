"""Triton kernels of `kernels.router` (autograd op in `op.py`).

The router's products have a thin side (R = E + Q outputs, 32 in the paper's HADES): v = u W_r^T
reads u once (M x D fp32) and du = dz + dv W_r reads the in_proj gradient once and writes u's
gradient once, so both are memory-bound; dW_r = dv^T u is split over row ranges (partial sums
added by the caller). Products in three tf32 passes ("tf32x3", fp32-accurate) on a GPU, "ieee"
in the interpreter.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def router_fwd_kernel(
    u_ptr, w_ptr, v_ptr, M, K, R,
    s_um, s_uk, s_wr, s_wk, s_vm, s_vr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, PREC: tl.constexpr,
    low_ptr=None, s_lm=0, STORE_LOW: tl.constexpr = False,
):
    """v[m, r] = sum_k u[m, k] w[r, k]: one program per BLOCK_M rows, all R outputs. STORE_LOW:
    also u in low_ptr's dtype (row stride s_lm, unit column stride), from the tiles read here:
    the in-projection's input, without a separate cast pass over u."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rr = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(u_ptr + rm[:, None] * s_um + rk[None, :] * s_uk, mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        if STORE_LOW:
            tl.store(low_ptr + rm[:, None].to(tl.int64) * s_lm + rk[None, :], a.to(low_ptr.dtype.element_ty, fp_downcast_rounding="rtne"),
                     mask=(rm[:, None] < M) & (rk[None, :] < K))
        b = tl.load(w_ptr + rr[None, :] * s_wr + rk[:, None] * s_wk, mask=(rr[None, :] < R) & (rk[:, None] < K), other=0.0)
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision=PREC)
    tl.store(v_ptr + rm[:, None] * s_vm + rr[None, :] * s_vr, acc, mask=(rm[:, None] < M) & (rr[None, :] < R))


@triton.jit
def router_bwd_du_kernel(
    dz_ptr, dv_ptr, w_ptr, du_ptr, M, K, R,
    s_zm, s_zk, s_dm, s_dr, s_wr, s_wk, s_um, s_uk,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, PREC: tl.constexpr,
):
    """du[m, k] = dz[m, k] + sum_r dv[m, r] w[r, k], fp32: one program per (BLOCK_M, BLOCK_K) tile."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    rr = tl.arange(0, BLOCK_R)
    mk = (rm[:, None] < M) & (rk[None, :] < K)
    acc = tl.load(dz_ptr + rm[:, None] * s_zm + rk[None, :] * s_zk, mask=mk, other=0.0).to(tl.float32)
    dv = tl.load(dv_ptr + rm[:, None] * s_dm + rr[None, :] * s_dr, mask=(rm[:, None] < M) & (rr[None, :] < R), other=0.0)
    w = tl.load(w_ptr + rr[:, None] * s_wr + rk[None, :] * s_wk, mask=(rr[:, None] < R) & (rk[None, :] < K), other=0.0)
    acc = tl.dot(dv.to(tl.float32), w.to(tl.float32), acc, input_precision=PREC)
    tl.store(du_ptr + rm[:, None] * s_um + rk[None, :] * s_uk, acc, mask=mk)


@triton.jit
def router_bwd_du_rows_kernel(
    dz_ptr, dv_ptr, w_ptr, du_ptr, M, K, R,
    s_zm, s_zk, s_dm, s_dr, s_wr, s_wk, s_um, s_uk,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, PREC: tl.constexpr, STAGES: tl.constexpr,
):
    """du as `router_bwd_du_kernel`, one program per BLOCK_M rows walking all K columns in tiles
    of BLOCK_K, software-pipelined over STAGES tiles (the tile kernel's one load -> product ->
    store per program left its loads' latency exposed: ~3x its memory floor on an H200); dv's
    rows are read once per program instead of once per column tile."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rr = tl.arange(0, BLOCK_R)
    dv = tl.load(dv_ptr + rm[:, None] * s_dm + rr[None, :] * s_dr, mask=(rm[:, None] < M) & (rr[None, :] < R), other=0.0)
    dv = dv.to(tl.float32)
    r64 = rm.to(tl.int64)[:, None]
    for k0 in tl.range(0, K, BLOCK_K, num_stages=STAGES):
        rk = k0 + tl.arange(0, BLOCK_K)
        mk = (rm[:, None] < M) & (rk[None, :] < K)
        acc = tl.load(dz_ptr + r64 * s_zm + rk[None, :] * s_zk, mask=mk, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + rr[:, None] * s_wr + rk[None, :] * s_wk, mask=(rr[:, None] < R) & (rk[None, :] < K), other=0.0)
        acc = tl.dot(dv, w.to(tl.float32), acc, input_precision=PREC)
        tl.store(du_ptr + r64 * s_um + rk[None, :] * s_uk, acc, mask=mk)


@triton.jit
def router_bwd_dw_kernel(
    dv_ptr, u_ptr, part_ptr, M, K, R, rows_per_split,
    s_dm, s_dr, s_um, s_uk, s_ps, s_pr, s_pk,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, PREC: tl.constexpr,
):
    """part[s, r, k] = sum over the rows m of split s of dv[m, r] u[m, k]: one program per
    (BLOCK_K columns, split); the caller sums the splits."""
    rk = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    s = tl.program_id(1)
    rr = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    m_end = tl.minimum((s + 1) * rows_per_split, M)
    for m0 in range(s * rows_per_split, m_end, BLOCK_M):
        rm = m0 + tl.arange(0, BLOCK_M)
        dvt = tl.load(dv_ptr + rr[:, None] * s_dr + rm[None, :] * s_dm, mask=(rr[:, None] < R) & (rm[None, :] < m_end), other=0.0)
        a = tl.load(u_ptr + rm[:, None] * s_um + rk[None, :] * s_uk, mask=(rm[:, None] < m_end) & (rk[None, :] < K), other=0.0)
        acc = tl.dot(dvt.to(tl.float32), a.to(tl.float32), acc, input_precision=PREC)
    tl.store(part_ptr + s * s_ps + rr[:, None] * s_pr + rk[None, :] * s_pk, acc, mask=(rr[:, None] < R) & (rk[None, :] < K))

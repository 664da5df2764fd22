"""Triton kernels of Mamba's selective scan (S6), forward and backward.

    h_t = exp(delta_t A) * h_{t-1} + delta_t u_t B_t      (per channel c and state n)
    y_t = sum_n C_t[n] h_t[c, n] + D[c] u_t[c]

One program owns a block of channels of one sequence and walks the time axis in tiles of
BLOCK_T tokens, carrying the (BLOCK_C, N) state in registers. Inside a tile the recurrence
is a first-order linear recurrence h_t = a_t h_{t-1} + v_t, which `tl.associative_scan` solves
in parallel with the combine (a1, v1) o (a2, v2) = (a1 a2, a2 v1 + v2); the carried state
enters as h_t = V_t + A_t h_in (A_t, V_t the scanned pair). Only multiplications by decays
<= 1 occur, so nothing overflows (the exp(-cumsum) trick of the SSD scan would).

Backward, walking the tiles in reverse with g_t = dL/dh_t:

    g_t = C_t dy_t + a_{t+1} g_{t+1}          (the same scan, reversed, with a shifted by one)
    du_t     = sum_n g_t delta_t B_t + D dy_t
    ddelta_t = sum_n g_t (u_t B_t + A a_t h_{t-1}),   a_t h_{t-1} = h_t - v_t
    dB_t     = sum_c g_t delta_t u_t            dC_t = sum_c dy_t h_t
    dA       = sum_t g_t delta_t a_t h_{t-1}    dD = sum_t dy_t u_t

h_t is recomputed per tile from the state at the tile's start, which the forward stores
(STORE_STATES) when gradients are needed. dB and dC sum over channels, i.e. over programs: each
program writes its partial sum, and the launcher adds them (deterministic, no atomics).
exp is computed as exp2 with log2(e) folded into A: one special-function op per (t, c, n).
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _combine(a1, v1, a2, v2):
    return a1 * a2, a2 * v1 + v2


@triton.jit
def selective_scan_fwd_kernel(
    u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, init_ptr,
    y_ptr, final_ptr, states_ptr,
    T, CH, N, ntiles,
    s_u_b, s_u_t, s_u_c,
    s_d_b, s_d_t, s_d_c,
    s_B_b, s_B_t, s_B_n,
    s_C_b, s_C_t, s_C_n,
    s_y_b, s_y_t, s_y_c,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_INIT: tl.constexpr, STORE_STATES: tl.constexpr,
):
    """Grid (cdiv(CH, BLOCK_C), batch). A: (CH, N) fp32 pre-multiplied by log2(e).
    init/final: fp32 contiguous (batch, CH, N); states: fp32 contiguous (batch, ntiles, CH, N)."""
    pid_c = tl.program_id(0)
    b = tl.program_id(1)
    offs_t = tl.arange(0, BLOCK_T)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_n = tl.arange(0, BLOCK_N)
    cmask = offs_c < CH
    nmask = offs_n < N
    cn_mask = cmask[:, None] & nmask[None, :]
    cn_offs = offs_c[:, None] * N + offs_n[None, :]
    A2 = tl.load(A_ptr + cn_offs, mask=cn_mask, other=0.0)  # (BLOCK_C, BLOCK_N)
    if HAS_D:
        Dc = tl.load(D_ptr + offs_c, mask=cmask, other=0.0)
    if HAS_INIT:
        state = tl.load(init_ptr + b * CH * N + cn_offs, mask=cn_mask, other=0.0)
    else:
        state = tl.zeros((BLOCK_C, BLOCK_N), dtype=tl.float32)
    is_last = (offs_t == BLOCK_T - 1)[:, None, None]
    for k in range(ntiles):
        if STORE_STATES:
            tl.store(states_ptr + (b * ntiles + k) * CH * N + cn_offs, state, mask=cn_mask)
        t = k * BLOCK_T + offs_t
        tmask = t < T
        tc_mask = tmask[:, None] & cmask[None, :]
        tn_mask = tmask[:, None] & nmask[None, :]
        u = tl.load(u_ptr + b * s_u_b + t[:, None] * s_u_t + offs_c[None, :] * s_u_c, mask=tc_mask, other=0.0).to(tl.float32)
        dl = tl.load(dl_ptr + b * s_d_b + t[:, None] * s_d_t + offs_c[None, :] * s_d_c, mask=tc_mask, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + b * s_B_b + t[:, None] * s_B_t + offs_n[None, :] * s_B_n, mask=tn_mask, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + b * s_C_b + t[:, None] * s_C_t + offs_n[None, :] * s_C_n, mask=tn_mask, other=0.0).to(tl.float32)
        a = tl.exp2(dl[:, :, None] * A2[None, :, :])  # (BLOCK_T, BLOCK_C, BLOCK_N)
        v = (dl * u)[:, :, None] * Bt[:, None, :]
        a_s, v_s = tl.associative_scan((a, v), 0, _combine)
        h = v_s + a_s * state[None, :, :]
        y = tl.sum(h * Ct[:, None, :], axis=2)
        if HAS_D:
            y += Dc[None, :] * u
        tl.store(y_ptr + b * s_y_b + t[:, None] * s_y_t + offs_c[None, :] * s_y_c,
                 y.to(y_ptr.dtype.element_ty), mask=tc_mask)
        state = tl.sum(tl.where(is_last, h, 0.0), axis=0)  # padded rows keep h: a = 1, v = 0
    tl.store(final_ptr + b * CH * N + cn_offs, state, mask=cn_mask)


@triton.jit
def selective_scan_fwd_tnc_kernel(
    u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, init_ptr,
    y_ptr, final_ptr, states_ptr,
    T, CH, N, ntiles,
    s_u_b, s_u_t, s_u_c,
    s_d_b, s_d_t, s_d_c,
    s_B_b, s_B_t, s_B_n,
    s_C_b, s_C_t, s_C_n,
    s_y_b, s_y_t, s_y_c,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_INIT: tl.constexpr, STORE_STATES: tl.constexpr,
):
    """`selective_scan_fwd_kernel` with the tile ordered (time, state, channel): channels are the
    innermost axis, so Triton's default layout gives each thread whole (time x state) columns of
    its channel, and the scan over time and the sum over states stay inside a thread (no
    shuffles). Same arguments and results."""
    pid_c = tl.program_id(0)
    b = tl.program_id(1)
    offs_t = tl.arange(0, BLOCK_T)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_n = tl.arange(0, BLOCK_N)
    cmask = offs_c < CH
    nmask = offs_n < N
    nc_mask = nmask[:, None] & cmask[None, :]
    nc_offs = offs_c[None, :] * N + offs_n[:, None]
    A2 = tl.load(A_ptr + nc_offs, mask=nc_mask, other=0.0)  # (BLOCK_N, BLOCK_C)
    if HAS_D:
        Dc = tl.load(D_ptr + offs_c, mask=cmask, other=0.0)
    if HAS_INIT:
        state = tl.load(init_ptr + b * CH * N + nc_offs, mask=nc_mask, other=0.0)
    else:
        state = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
    is_last = (offs_t == BLOCK_T - 1)[:, None, None]
    for k in range(ntiles):
        if STORE_STATES:
            tl.store(states_ptr + (b * ntiles + k) * CH * N + nc_offs, state, mask=nc_mask)
        t = k * BLOCK_T + offs_t
        tmask = t < T
        tc_mask = tmask[:, None] & cmask[None, :]
        tn_mask = tmask[:, None] & nmask[None, :]
        u = tl.load(u_ptr + b * s_u_b + t[:, None] * s_u_t + offs_c[None, :] * s_u_c, mask=tc_mask, other=0.0).to(tl.float32)
        dl = tl.load(dl_ptr + b * s_d_b + t[:, None] * s_d_t + offs_c[None, :] * s_d_c, mask=tc_mask, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + b * s_B_b + t[:, None] * s_B_t + offs_n[None, :] * s_B_n, mask=tn_mask, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + b * s_C_b + t[:, None] * s_C_t + offs_n[None, :] * s_C_n, mask=tn_mask, other=0.0).to(tl.float32)
        a = tl.exp2(dl[:, None, :] * A2[None, :, :])  # (BLOCK_T, BLOCK_N, BLOCK_C)
        v = (dl * u)[:, None, :] * Bt[:, :, None]
        a_s, v_s = tl.associative_scan((a, v), 0, _combine)
        h = v_s + a_s * state[None, :, :]
        y = tl.sum(h * Ct[:, :, None], axis=1)
        if HAS_D:
            y += Dc[None, :] * u
        tl.store(y_ptr + b * s_y_b + t[:, None] * s_y_t + offs_c[None, :] * s_y_c,
                 y.to(y_ptr.dtype.element_ty), mask=tc_mask)
        state = tl.sum(tl.where(is_last, h, 0.0), axis=0)
    tl.store(final_ptr + b * CH * N + nc_offs, state, mask=nc_mask)


@triton.jit
def selective_scan_bwd_kernel(
    u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, states_ptr, dy_ptr, dfinal_ptr,
    du_ptr, ddl_ptr, dB_part_ptr, dC_part_ptr, dA_part_ptr, dD_part_ptr, dinit_ptr,
    T, CH, N, ntiles,
    s_u_b, s_u_t, s_u_c,
    s_d_b, s_d_t, s_d_c,
    s_B_b, s_B_t, s_B_n,
    s_C_b, s_C_t, s_C_n,
    s_dy_b, s_dy_t, s_dy_c,
    s_du_b, s_du_t, s_du_c,
    s_dd_b, s_dd_t, s_dd_c,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_DFINAL: tl.constexpr, STORE_DINIT: tl.constexpr,
):
    """Grid (cdiv(CH, BLOCK_C), batch). du/ddl: shapes of u/delta, own strides;
    dB/dC partials fp32 (cdiv(CH, BLOCK_C), batch, T, N); dA partial fp32 (batch, CH, N);
    dD partial fp32 (batch, CH); dinit fp32 (batch, CH, N)."""
    pid_c = tl.program_id(0)
    b = tl.program_id(1)
    offs_t = tl.arange(0, BLOCK_T)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_n = tl.arange(0, BLOCK_N)
    cmask = offs_c < CH
    nmask = offs_n < N
    cn_mask = cmask[:, None] & nmask[None, :]
    cn_offs = offs_c[:, None] * N + offs_n[None, :]
    A2 = tl.load(A_ptr + cn_offs, mask=cn_mask, other=0.0)  # A * log2(e)
    A = A2 * 0.6931471805599453
    if HAS_D:
        Dc = tl.load(D_ptr + offs_c, mask=cmask, other=0.0)
        dD = tl.zeros((BLOCK_C,), dtype=tl.float32)
    if HAS_DFINAL:
        carry = tl.load(dfinal_ptr + b * CH * N + cn_offs, mask=cn_mask, other=0.0)
    else:
        carry = tl.zeros((BLOCK_C, BLOCK_N), dtype=tl.float32)
    dA = tl.zeros((BLOCK_C, BLOCK_N), dtype=tl.float32)
    is_first = (offs_t == 0)[:, None, None]
    for i in range(ntiles):
        k = ntiles - 1 - i
        t = k * BLOCK_T + offs_t
        tmask = t < T
        tc_mask = tmask[:, None] & cmask[None, :]
        tn_mask = tmask[:, None] & nmask[None, :]
        # the next token inside this tile (the last row reads none: its successor's decay is
        # applied to the carry by the tile that owns it)
        t1 = t + 1
        t1mask = (t1 < T) & (offs_t < BLOCK_T - 1)
        u = tl.load(u_ptr + b * s_u_b + t[:, None] * s_u_t + offs_c[None, :] * s_u_c, mask=tc_mask, other=0.0).to(tl.float32)
        dl = tl.load(dl_ptr + b * s_d_b + t[:, None] * s_d_t + offs_c[None, :] * s_d_c, mask=tc_mask, other=0.0).to(tl.float32)
        dl1 = tl.load(dl_ptr + b * s_d_b + t1[:, None] * s_d_t + offs_c[None, :] * s_d_c,
                      mask=t1mask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + b * s_dy_b + t[:, None] * s_dy_t + offs_c[None, :] * s_dy_c, mask=tc_mask, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + b * s_B_b + t[:, None] * s_B_t + offs_n[None, :] * s_B_n, mask=tn_mask, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + b * s_C_b + t[:, None] * s_C_t + offs_n[None, :] * s_C_n, mask=tn_mask, other=0.0).to(tl.float32)
        s_in = tl.load(states_ptr + (b * ntiles + k) * CH * N + cn_offs, mask=cn_mask, other=0.0)

        # forward, recomputed: h_t
        a = tl.exp2(dl[:, :, None] * A2[None, :, :])
        v = (dl * u)[:, :, None] * Bt[:, None, :]
        a_s, v_s = tl.associative_scan((a, v), 0, _combine)
        h = v_s + a_s * s_in[None, :, :]
        # backward: g_t = C_t dy_t + a_{t+1} g_{t+1}, the carry entering at the tile's end
        alpha = tl.exp2(dl1[:, :, None] * A2[None, :, :])
        beta = dy[:, :, None] * Ct[:, None, :]
        al_s, be_s = tl.associative_scan((alpha, beta), 0, _combine, reverse=True)
        g = be_s + al_s * carry[None, :, :]

        gB = tl.sum(g * Bt[:, None, :], axis=2)  # (BLOCK_T, BLOCK_C)
        du = gB * dl
        ahp = h - v  # a_t h_{t-1}
        gah = g * ahp
        ddl = gB * u + tl.sum(gah * A[None, :, :], axis=2)
        if HAS_D:
            du += Dc[None, :] * dy
            dD += tl.sum(dy * u, axis=0)
        tl.store(du_ptr + b * s_du_b + t[:, None] * s_du_t + offs_c[None, :] * s_du_c,
                 du.to(du_ptr.dtype.element_ty), mask=tc_mask)
        tl.store(ddl_ptr + b * s_dd_b + t[:, None] * s_dd_t + offs_c[None, :] * s_dd_c,
                 ddl.to(ddl_ptr.dtype.element_ty), mask=tc_mask)
        dA += tl.sum(gah * dl[:, :, None], axis=0)
        dB = tl.sum(g * (dl * u)[:, :, None], axis=1)  # (BLOCK_T, BLOCK_N)
        dC = tl.sum(h * dy[:, :, None], axis=1)
        part = ((pid_c * tl.num_programs(1) + b) * T + t[:, None]) * N + offs_n[None, :]
        tl.store(dB_part_ptr + part, dB, mask=tn_mask)
        tl.store(dC_part_ptr + part, dC, mask=tn_mask)
        carry = tl.sum(tl.where(is_first, a * g, 0.0), axis=0)  # a_first g_first
    tl.store(dA_part_ptr + b * CH * N + cn_offs, dA, mask=cn_mask)
    if HAS_D:
        tl.store(dD_part_ptr + b * CH + offs_c, dD, mask=cmask)
    if STORE_DINIT:
        tl.store(dinit_ptr + b * CH * N + cn_offs, carry, mask=cn_mask)

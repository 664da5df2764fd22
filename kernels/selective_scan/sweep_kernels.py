"""Kernels of the selective scan that the default path does not run: the forward layouts "tcn",
"tnc" and "seq" of op.CONFIG["fwd"]["layout"] and the backward layout "tile" of
op.CONFIG["bwd"]["layout"], kept for `benchmarks/selective_scan.py --sweep-fwd / --sweep-bwd`
(which time every layout against the default "split", `kernel.py`) and the tests of every
layout. Same arguments and results as the split kernels; the recurrence and its gradients in
`kernel.py`.

`selective_scan_bwd_kernel` ("tile", the first round's backward): one program owns a block of
channels of one sequence and walks the time axis in reverse, in tiles of BLOCK_T tokens,
carrying the (BLOCK_C, N) gradient state in registers. Inside a tile h_t = a_t h_{t-1} + v_t is
a first-order linear recurrence, which `tl.associative_scan` solves in parallel with the
combine (a1, v1) o (a2, v2) = (a1 a2, a2 v1 + v2) (`_combine`); the carried state enters as
h_t = V_t + A_t h_in (A_t, V_t the scanned pair). Only multiplications by decays <= 1 occur, so
nothing overflows (the exp(-cumsum) trick of the SSD scan would). The gradient state runs the
same scan reversed, with the decays shifted by one; h_t is recomputed per tile from the state at
the tile's start.

`selective_scan_fwd_kernel` ("tcn", the first round's forward): one program owns a block of
channels of one sequence and walks the time axis in tiles of BLOCK_T tokens, carrying the
(BLOCK_C, N) state in registers; inside a tile `tl.associative_scan` solves the first-order
linear recurrence h_t = a_t h_{t-1} + v_t (`_combine`, the tile backward's scan too), and the
carried state enters as h_t = V_t + A_t h_in. `selective_scan_fwd_tnc_kernel` ("tnc"): the same
with the tile ordered (time, state, channel).

`selective_scan_fwd_seq_kernel` ("seq") is a forward without the scan: one token at a time, each
lane owning one channel and all its N states, so no work crosses lanes (the tile kernels pay
shuffles for the sum over states and the scan, which Triton spreads over lanes). The default
split forward is seq with each channel's states split over NG lanes: NG times the warps (seq has
one warp per 32 channels of a sequence, one warp per SM sub-partition at Mamba-370M's shape, too
few to hide latency), for log2(NG) shuffle rounds per token in the sum.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .kernel import _to_f32


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
def selective_scan_fwd_seq_kernel(
    u_ptr, dl_ptr, AT_ptr, B_ptr, C_ptr, D_ptr, init_ptr,
    y_ptr, final_ptr, states_ptr,
    T, CH, N: tl.constexpr, nstates,
    s_u_b, s_u_t: tl.constexpr, s_u_c,
    s_d_b, s_d_t: tl.constexpr, s_d_c,
    s_B_b, s_B_t: tl.constexpr, s_B_n,
    s_C_b, s_C_t: tl.constexpr, s_C_n,
    s_y_b, s_y_t: tl.constexpr, s_y_c,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, STATE_T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_INIT: tl.constexpr, STORE_STATES: tl.constexpr,
):
    """The forward one token at a time, states inside the thread: the carried state is an
    (N, BLOCK_C) tile whose last axis is channels, so Triton's default layout puts one channel
    per lane and all N states of it in that lane's registers (with BLOCK_C = 32 * num_warps).
    The recurrence is then N independent scalar FMAs per token and y_t = sum_n C_t[n] h_t[n]
    an in-thread sum: no shuffles, and one exp2 per (token, channel, state), the floor.
    Time goes in tiles of BLOCK_T tokens, unrolled; a tile's inputs are loaded while the
    previous tile computes.

    Grid (cdiv(CH, BLOCK_C), batch). AT: (N, CH) fp32, A transposed and pre-multiplied by
    log2(e). init/final: fp32 contiguous (batch, CH, N). states: fp32 contiguous
    (batch, nstates, CH, N), the state entering every STATE_T tokens (the backward's tile).
    N and the time strides are compile-time constants: with N = BLOCK_N the state masks vanish
    (B_t, C_t are read with vector loads), and a token's address inside a tile is an immediate
    offset of the load (one kernel per model width, no address arithmetic per token)."""
    pid_c = tl.program_id(0)
    b = tl.program_id(1)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_n = tl.arange(0, BLOCK_N)
    cmask = offs_c < CH
    nmask = offs_n < N
    nc_mask = nmask[:, None] & cmask[None, :]
    nc_offs = offs_c[None, :] * N + offs_n[:, None]  # into (CH, N)
    # A and the initial state are read one state (a channel vector) at a time and assembled:
    # a 2-D load would be vectorised along channels (4 per lane), and Triton would carry that
    # layout into the loop, spreading each channel's states over 4 lanes (shuffles again).
    A2 = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)  # A^T * log2(e)
    h = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
    for n in tl.static_range(BLOCK_N):
        row = offs_n[:, None] == n
        A2 = tl.where(row, tl.load(AT_ptr + n * CH + offs_c, mask=cmask & (n < N), other=0.0)[None, :], A2)
        if HAS_INIT:
            h = tl.where(row, tl.load(init_ptr + b * CH * N + offs_c * N + n, mask=cmask & (n < N), other=0.0)[None, :], h)
    if HAS_D:
        Dc = tl.load(D_ptr + offs_c, mask=cmask, other=0.0)
    else:
        Dc = 0.0
    u_row = u_ptr + b * s_u_b + offs_c * s_u_c
    dl_row = dl_ptr + b * s_d_b + offs_c * s_d_c
    y_row = y_ptr + b * s_y_b + offs_c * s_y_c
    B_row = B_ptr + b * s_B_b + offs_n * s_B_n
    C_row = C_ptr + b * s_C_b + offs_n * s_C_n
    states_row = states_ptr + b * nstates * CH * N + nc_offs
    # Whole tiles first, without time masks (fewer instructions per token), each one's inputs
    # loaded while the previous tile computes: with one warp per SM sub-partition nothing else
    # hides the memory latency. Two tiles per iteration, so that each buffer is reloaded in
    # place once its tile is done (a loop-carried `cur = nxt` would cost a register copy per
    # value). The loads sit before the tile's y stores in program order because the compiler
    # may not move a load above a store that could alias it.
    nfull = T // BLOCK_T
    buf_a = _seq_load(0, T, u_row, dl_row, B_row, C_row, cmask, nmask, s_u_t, s_d_t, s_B_t, s_C_t, BLOCK_T, True)
    for k in range(nfull // 2):
        t0 = 2 * k * BLOCK_T
        buf_b = _seq_load(t0 + BLOCK_T, T, u_row, dl_row, B_row, C_row, cmask, nmask, s_u_t, s_d_t, s_B_t, s_C_t,
                          BLOCK_T, False)
        h = _seq_tile(h, t0, T, buf_a, A2, Dc, y_row, states_row, cmask, nc_mask, CH * N, s_y_t,
                      BLOCK_T, STATE_T, HAS_D, STORE_STATES, False)
        # the tile after next, or (at the end) the last whole tile again: in range, maybe unused
        t_next = tl.minimum(t0 + 2 * BLOCK_T, (nfull - 1) * BLOCK_T)
        buf_a = _seq_load(t_next, T, u_row, dl_row, B_row, C_row, cmask, nmask, s_u_t, s_d_t, s_B_t, s_C_t,
                          BLOCK_T, False)
        h = _seq_tile(h, t0 + BLOCK_T, T, buf_b, A2, Dc, y_row, states_row, cmask, nc_mask, CH * N, s_y_t,
                      BLOCK_T, STATE_T, HAS_D, STORE_STATES, False)
    if nfull % 2 == 1:  # buf_a holds the last whole tile
        h = _seq_tile(h, (nfull - 1) * BLOCK_T, T, buf_a, A2, Dc, y_row, states_row, cmask, nc_mask, CH * N, s_y_t,
                      BLOCK_T, STATE_T, HAS_D, STORE_STATES, False)
    if nfull * BLOCK_T < T:  # the partial tile, masked
        t0 = nfull * BLOCK_T
        cur = _seq_load(t0, T, u_row, dl_row, B_row, C_row, cmask, nmask, s_u_t, s_d_t, s_B_t, s_C_t, BLOCK_T, True)
        h = _seq_tile(h, t0, T, cur, A2, Dc, y_row, states_row, cmask, nc_mask, CH * N, s_y_t,
                      BLOCK_T, STATE_T, HAS_D, STORE_STATES, True)
    tl.store(final_ptr + b * CH * N + nc_offs, h, mask=nc_mask)


@triton.jit
def _seq_load(
    t0, T, u_row, dl_row, B_row, C_row, cmask, nmask, s_u_t, s_d_t, s_B_t, s_C_t,
    BLOCK_T: tl.constexpr, MASK_T: tl.constexpr,
):
    """The inputs of tokens t0 .. t0 + BLOCK_T - 1, as four tuples (u, delta, B, C) of
    per-token vectors in the input dtype. MASK_T: tokens past T read 0 (delta = 0: decay 1,
    no input)."""
    us = ()
    dls = ()
    Bs = ()
    Cs = ()
    for i in tl.static_range(BLOCK_T):
        t = t0 + i
        cm = cmask
        nm = nmask
        if MASK_T:
            cm = cm & (t < T)
            nm = nm & (t < T)
        us = us + (tl.load(u_row + t * s_u_t, mask=cm, other=0.0),)
        dls = dls + (tl.load(dl_row + t * s_d_t, mask=cm, other=0.0),)
        Bs = Bs + (tl.load(B_row + t * s_B_t, mask=nm, other=0.0),)
        Cs = Cs + (tl.load(C_row + t * s_C_t, mask=nm, other=0.0),)
    return us, dls, Bs, Cs


@triton.jit
def _seq_tile(
    h, t0, T, inputs, A2, Dc, y_row, states_row, cmask, nc_mask, state_stride, s_y_t,
    BLOCK_T: tl.constexpr, STATE_T: tl.constexpr, HAS_D: tl.constexpr, STORE_STATES: tl.constexpr,
    MASK_T: tl.constexpr,
):
    """Tokens t0 .. t0 + BLOCK_T - 1 of `selective_scan_fwd_seq_kernel`, unrolled, from their
    `_seq_load`ed inputs; writes y (and the entering states) and returns h. MASK_T: the tile
    may pass T (writes nothing there)."""
    us, dls, Bs, Cs = inputs
    for i in tl.static_range(BLOCK_T):
        t = t0 + i
        cm = cmask
        if MASK_T:
            cm = cm & (t < T)
        if STORE_STATES:
            if i % STATE_T == 0:  # (the launcher makes one of BLOCK_T, STATE_T divide the other)
                sm = nc_mask & (t % STATE_T == 0)
                if MASK_T:
                    sm = sm & (t < T)
                tl.store(states_row + (t // STATE_T) * state_stride, h, mask=sm)
        u = _to_f32(us[i])
        dl = _to_f32(dls[i])
        Bt = _to_f32(Bs[i])
        Ct = _to_f32(Cs[i])
        h = tl.exp2(dl[None, :] * A2) * h + (dl * u)[None, :] * Bt[:, None]
        y = tl.sum(Ct[:, None] * h, axis=0)
        if HAS_D:
            y += Dc * u
        tl.store(y_row + t * s_y_t, y.to(y_row.dtype.element_ty), mask=cm)
    return h


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

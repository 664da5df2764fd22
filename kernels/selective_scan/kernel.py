"""Triton kernels of Mamba's selective scan (S6) that training and inference run: the default
forward and backward (both "split").

    h_t = exp(delta_t A) * h_{t-1} + delta_t u_t B_t      (per channel c and state n)
    y_t = sum_n C_t[n] h_t[c, n] + D[c] u_t[c]

Forward, `selective_scan_fwd_split_kernel`: one token at a time, each channel's N states split
over NG lanes (its N / NG states in that lane's registers), time walked in unrolled tiles whose
inputs load while the previous tiles compute; y_t is the sum of the NG lanes' partial sums
(log2(NG) shuffle rounds per token). It stores the state entering every backward tile when
gradients are needed (STORE_STATES).

Backward, `selective_scan_bwd_split_kernel` (op.CONFIG["bwd"]["layout"] "split"): in the split
forward's lanes, token by token, from the state the forward stored at the start of every tile of
BLOCK_T tokens; its docstring has the algorithm. With g_t = dL/dh_t:

    g_t = C_t dy_t + a_{t+1} g_{t+1}
    du_t     = sum_n g_t delta_t B_t + D dy_t
    ddelta_t = sum_n g_t (u_t B_t + A a_t h_{t-1}),   a_t h_{t-1} = h_t - v_t
    dB_t     = sum_c g_t delta_t u_t            dC_t = sum_c dy_t h_t
    dA       = sum_t g_t delta_t a_t h_{t-1}    dD = sum_t dy_t u_t

dB and dC sum over channels, i.e. over programs: each program writes its partial sum, and the
launcher adds them (deterministic, no atomics). exp is computed as exp2 with log2(e) folded into
A: one special-function op per (t, c, n) and pass.

The other forward layouts that `benchmarks/selective_scan.py --sweep-fwd` times against this
one ("tcn", "tnc", "seq"; op.CONFIG["fwd"]["layout"] picks one) and the first round's backward
("tile", 4.6x slower on an H200, docs/benchmarks.md section 8) are in `sweep_kernels.py`.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._triton import without_coalesce

LOG2E = 1.4426950408889634


@triton.jit
def _to_f32(x):
    """x as fp32. bf16 through integer ops (a bf16 is the top half of its fp32): fewer
    instructions per element than the conversion instruction in the sm_90 SASS."""
    if x.dtype == tl.bfloat16:
        return (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    return x.to(tl.float32)


@triton.jit
def _delta_act(x, bias, SOFTPLUS: tl.constexpr, ASM: tl.constexpr = False):
    """The time step the scan uses from the fp32 x the kernel read: softplus(x + bias) with
    SOFTPLUS (as log2(1 + 2^(x log2 e)) ln 2, x itself above 20 as torch's softplus; absolute
    error ~4e-8, the rounding of 1 + e^x), else x. x = -inf (a masked load) gives 0. ASM: the
    four instructions as flush-to-zero PTX (1 + e^x >= 1 is never subnormal, a subnormal e^x
    is 0 next to 1): Triton's exp2 / log2 also handle subnormal inputs, ~2x the instructions."""
    if SOFTPLUS:
        x = x + bias
        if ASM:
            y = tl.inline_asm_elementwise(
                "{ .reg .f32 t; mul.ftz.f32 t, $1, 0f3FB8AA3B; ex2.approx.ftz.f32 t, t; "
                "add.ftz.f32 t, t, 0f3F800000; lg2.approx.ftz.f32 t, t; mul.ftz.f32 $0, t, 0f3F317218; }",
                "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1)
        else:
            y = tl.log2(1.0 + tl.exp2(x * 1.4426950408889634)) * 0.6931471805599453
        x = tl.where(x > 20.0, x, y)
    return x


@triton.jit
def _softplus_grad(delta, ASM: tl.constexpr = False):
    """d softplus(x) / dx = sigmoid(x) = 1 - e^(-softplus(x)), from delta = softplus(x) (absolute
    error ~6e-8, the rounding of e^(-delta) next to 1). ASM: as in `_delta_act`."""
    if ASM:
        return tl.inline_asm_elementwise(
            "{ .reg .f32 t; mul.ftz.f32 t, $1, 0fBFB8AA3B; ex2.approx.ftz.f32 t, t; sub.ftz.f32 $0, 0f3F800000, t; }",
            "=f,f", [delta], dtype=tl.float32, is_pure=True, pack=1)
    return 1.0 - tl.exp2(delta * -1.4426950408889634)


@triton.jit
def selective_scan_fwd_split_kernel(
    u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, init_ptr,
    y_ptr, final_ptr, states_ptr,
    T, CH, N: tl.constexpr, nstates,
    s_u_b, s_u_t: tl.constexpr, s_u_c,
    s_d_b, s_d_t: tl.constexpr, s_d_c,
    s_B_b, s_B_t: tl.constexpr, s_B_n,
    s_C_b, s_C_t: tl.constexpr, s_C_n,
    s_y_b, s_y_t: tl.constexpr, s_y_c,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, NG: tl.constexpr,
    STATE_T: tl.constexpr, PAIRS: tl.constexpr, EVEN_C: tl.constexpr, NBUF: tl.constexpr,
    SHFL_UD: tl.constexpr, HAS_D: tl.constexpr, HAS_INIT: tl.constexpr, STORE_STATES: tl.constexpr,
    db_ptr=None, HAS_BIAS: tl.constexpr = False, SOFTPLUS: tl.constexpr = False, ASM: tl.constexpr = False,
):
    """The token-by-token forward of `sweep_kernels.selective_scan_fwd_seq_kernel` with each
    channel's states split over NG lanes, NS = BLOCK_N / NG states per lane: NG times more warps for the same
    problem (the seq kernel runs one warp per 32 channels of a sequence, 512 warps at
    Mamba-370M's shape, too few to hide the latency of the loads and of a token's
    exp2 -> FMA chain). y_t is the sum of the NG lanes' partial sums: log2(NG) shuffle rounds.

    Lanes: the W = BLOCK_C * NG lanes of a program (32 * num_warps) are (warp, group, channel),
    channel fastest, so that the sum over groups leaves y with one channel per lane in the layout
    of its store. Per-lane values are vectors over W; a lane's states are a tuple of NS / SC
    chunks of SC <= 4 consecutive states, each an (SC, W) tile whose rows are in-thread, Triton's
    default layout (as in the seq kernel), which is also that of a 16-byte load of A, the initial
    state or the state store (one tile of more than 4 fp32 rows would be vectorised 4 rows at a
    time with the rest spread over lanes, and Triton would carry that layout into the loop).

    PAIRS: B and C are bf16, read as uint32 pairs of states and converted with one integer op per
    state (shift the low half up, mask the high half) instead of extract + shift; needs an even N
    and even strides (the launcher checks). EVEN_C: CH % BLOCK_C == 0, no channel masks. NBUF:
    tile buffers in the ring of loads (the loop below). SHFL_UD: bf16 u and delta read one token
    per lane group and shuffled (`_split_load`).

    Grid (cdiv(CH, BLOCK_C), batch). A: (CH, N) fp32 pre-multiplied by log2(e) (each lane reads
    its own states of a channel's row). init/final: fp32 contiguous (batch, CH, N). states: fp32
    contiguous (batch, nstates, CH, N), the state entering every STATE_T tokens (the backward's
    tile). N and the time strides are compile-time constants, as in the seq kernel: a token's
    address inside a tile is an immediate offset of the load.

    SOFTPLUS: delta is the time step before its activation: the scan uses softplus(delta + bias)
    (HAS_BIAS: db_ptr, (CH,) fp32), computed in fp32 per token (`_delta_act`; ASM: in PTX), as
    mamba_ssm's delta_softplus / delta_bias."""
    NS: tl.constexpr = BLOCK_N // NG
    SC: tl.constexpr = 4 if NS > 4 else NS  # states per chunk
    CW: tl.constexpr = 32 // NG  # channels per warp
    NW: tl.constexpr = BLOCK_C // CW  # warps
    pid_c = tl.program_id(0)
    b = tl.program_id(1)
    lane = tl.arange(0, BLOCK_C * NG)
    g = (lane // CW) % NG
    offs_c = pid_c * BLOCK_C + (lane // 32) * CW + lane % CW  # (W,) the channel of each lane
    cmask = offs_c < CH
    # per chunk k: states n = g * NS + k * SC + (0 .. SC - 1), as (SC, W) offsets into (CH, N)
    n0 = g[None, :] * NS + tl.arange(0, SC)[:, None]
    cn_offs = ()
    cn_mask = ()
    A2 = ()
    h = ()
    for k in tl.static_range(NS // SC):
        offs = offs_c[None, :] * N + n0 + k * SC
        mask = cmask[None, :] & (n0 + k * SC < N)
        cn_offs = cn_offs + (offs,)
        cn_mask = cn_mask + (mask,)
        A2 = A2 + (tl.load(A_ptr + offs, mask=mask, other=0.0),)
        if HAS_INIT:
            h = h + (tl.load(init_ptr + b * CH * N + offs, mask=mask, other=0.0),)
        else:
            h = h + (tl.zeros((SC, BLOCK_C * NG), dtype=tl.float32),)
    if HAS_D:  # D on the first lane of each channel only: the sum over lanes adds it once
        Dw = tl.load(D_ptr + offs_c, mask=cmask & (g == 0), other=0.0)
    else:
        Dw = 0.0
    if HAS_BIAS:  # (only with SOFTPLUS: the launcher adds a bias alone outside)
        dbias = tl.load(db_ptr + offs_c, mask=cmask, other=0.0)
    else:
        dbias = 0.0
    # y: (warp, group, channel), the lanes of the state tiles: the sum over groups, broadcast back
    # over them, is stored by every group (same address, same value: one store per token), so
    # that Triton's layout of the store is that of the sum (a (warp, channel) store would be laid
    # out with warps over channels only for one warp, and cost a conversion through shared memory)
    yc = (pid_c * BLOCK_C + tl.arange(0, NW)[None, :, None] * CW + tl.arange(0, CW)[None, None, :]
          + 0 * tl.arange(0, NG)[:, None, None])  # (NG, NW, CW)
    y_row = y_ptr + b * s_y_b + yc * s_y_c
    ymask = None if EVEN_C else yc < CH
    u_row = u_ptr + b * s_u_b + offs_c * s_u_c
    dl_row = dl_ptr + b * s_d_b + offs_c * s_d_c
    cm = None if EVEN_C else cmask
    B_rows = ()
    C_rows = ()
    nm = ()  # per chunk: the states < N (None: N = BLOCK_N, all)
    if PAIRS:  # chunks of SC / 2 uint32 pairs of states
        p0 = g[None, :] * (NS // 2) + tl.arange(0, SC // 2)[:, None]
        B32 = B_ptr.to(tl.pointer_type(tl.uint32)) + (b * s_B_b) // 2
        C32 = C_ptr.to(tl.pointer_type(tl.uint32)) + (b * s_C_b) // 2
        for k in tl.static_range(NS // SC):
            B_rows = B_rows + (B32 + p0 + k * (SC // 2),)
            C_rows = C_rows + (C32 + p0 + k * (SC // 2),)
            nm = nm + (p0 + k * (SC // 2) < N // 2,)
        sB_t: tl.constexpr = s_B_t // 2
        sC_t: tl.constexpr = s_C_t // 2
    else:
        for k in tl.static_range(NS // SC):
            B_rows = B_rows + (B_ptr + b * s_B_b + (n0 + k * SC) * s_B_n,)
            C_rows = C_rows + (C_ptr + b * s_C_b + (n0 + k * SC) * s_C_n,)
            nm = nm + (n0 + k * SC < N,)
        sB_t: tl.constexpr = s_B_t
        sC_t: tl.constexpr = s_C_t
    if N == BLOCK_N:
        nm = None
    rows = (u_row, dl_row, B_rows, C_rows)
    strides = (s_u_t, s_d_t, sB_t, sC_t)
    if SHFL_UD:  # lane group g reads token g of every NG (see `_split_load`)
        rows_t = (u_row + g * s_u_t, dl_row + g * s_d_t, B_rows, C_rows)
        src = ()
        for r in tl.static_range(NG):
            src = src + ((r * CW + lane % CW).to(tl.int32),)
    else:
        rows_t = rows
        src = None
    states_row = ()
    for k in tl.static_range(NS // SC):
        states_row = states_row + (states_ptr + b * nstates * CH * N + cn_offs[k],)
    # A ring of NBUF tile buffers: the loads of tile k + NBUF - 1 are issued before tile k is
    # computed, so each tile's inputs are in flight while NBUF - 1 tiles compute. NBUF copies of
    # the unrolled tile code per loop iteration (Triton's layout pass, Coalesce, takes time that
    # grows steeply with the size of the unrolled code), then the last < NBUF * BLOCK_T tokens
    # one at a time, each loaded one token ahead.
    #
    # A tile's stores (y, states) come after the next step's loads in program order: ptxas keeps
    # loads below earlier stores (they may alias) and sinks stores, so loads written after the
    # previous tile's stores ended up at the very bottom of the loop, each tile waiting for its
    # inputs' full latency (ncu: long-scoreboard stalls on half of all cycles, docs/benchmarks.md).
    TILES: tl.constexpr = NBUF * BLOCK_T
    nrounds = T // TILES
    last = tl.maximum(nrounds * NBUF - 1, 0) * BLOCK_T  # the last tile of the rounds: loads stay in range
    bufs = ()
    for j in tl.static_range(NBUF - 1):
        bufs = bufs + (_split_load(j * BLOCK_T, T, rows_t, strides, cm, nm, BLOCK_T, True, SHFL_UD, NG, g),)
    bufs = bufs + (bufs[0],)  # a placeholder of the right type, loaded before it is read
    for i in range(nrounds):
        for j in tl.static_range(NBUF):
            t0 = (i * NBUF + j) * BLOCK_T
            nxt = _split_load(tl.minimum(t0 + (NBUF - 1) * BLOCK_T, last), T, rows_t, strides, cm, nm, BLOCK_T, False,
                              SHFL_UD, NG, g)
            if j > 0:  # the previous tile's stores, after this step's loads
                _split_store(out, t0 - BLOCK_T,  # noqa: F821 - set by step j - 1 (static unroll)
                             y_row, ymask, states_row, cn_mask, CH * N, s_y_t, BLOCK_T,
                             STATE_T, STORE_STATES)
            h, out = _split_tile(h, bufs[j], A2, Dw, BLOCK_T, NG, STATE_T, PAIRS, HAS_D, STORE_STATES, SHFL_UD, src,
                                 dbias, SOFTPLUS, ASM)
            bufs = _tuple_set(bufs, (j + NBUF - 1) % NBUF, nxt)
        _split_store(out, (i * NBUF + NBUF - 1) * BLOCK_T, y_row, ymask, states_row, cn_mask, CH * N, s_y_t,
                     BLOCK_T, STATE_T, STORE_STATES)
    t_tail = nrounds * TILES
    one = _split_load(t_tail, T, rows, strides, cm, nm, 1, True)
    for t in range(t_tail, T):
        nxt = _split_load(tl.minimum(t + 1, T - 1), T, rows, strides, cm, nm, 1, False)
        h, out = _split_tile(h, one, A2, Dw, 1, NG, STATE_T, PAIRS, HAS_D, STORE_STATES, dbias=dbias, SOFTPLUS=SOFTPLUS,
                             ASM=ASM)
        one = nxt
        _split_store(out, t, y_row, ymask, states_row, cn_mask, CH * N, s_y_t, 1, STATE_T, STORE_STATES)
    for k in tl.static_range(NS // SC):
        tl.store(final_ptr + b * CH * N + cn_offs[k], h[k], mask=cn_mask[k])


@triton.jit
def _shfl_idx(x, src_lane):
    """Each lane's x (uint32) from lane src_lane of its warp (shfl.sync.idx; one element per lane)."""
    return tl.inline_asm_elementwise("shfl.sync.idx.b32 $0, $1, $2, 0x1f, 0xffffffff;", "=r,r,r", [x, src_lane],
                                     dtype=tl.uint32, is_pure=True, pack=1)


@triton.jit
def _tuple_set(tup, idx: tl.constexpr, val):
    """tup with element idx replaced by val."""
    out = ()
    for i in tl.static_range(len(tup)):
        if i == idx:
            out = out + (val,)
        else:
            out = out + (tup[i],)
    return out


@triton.jit
def _split_load(t0, T, rows, strides, cmask, nmask, BLOCK_T: tl.constexpr, MASK_T: tl.constexpr,
                SHFL: tl.constexpr = False, NG: tl.constexpr = 1, g=None):
    """The (u, delta, B, C) of tokens t0 .. t0 + BLOCK_T - 1 as four tuples over tokens in the
    input dtype, B and C each a tuple of state chunks (uint32 pairs with PAIRS). A row pointer
    moves to the tile once; the tokens inside it are constant offsets (immediates of the loads).
    MASK_T: tokens past T read 0 (delta = 0: decay 1, no input). cmask: None = all channels;
    nmask: a tuple over chunks, or None = all states.

    SHFL (bf16 u and delta, BLOCK_T a multiple of NG): u and delta are BLOCK_T / NG uint32 words,
    the one of tokens t0 + q NG .. t0 + q NG + NG - 1: lane group g (its rows `rows` offset by g
    tokens) loads token t0 + q NG + g of its channel, u in the low half, delta in the high half;
    `_split_tile` hands token i's word to every group with one shuffle. One load of u and one of
    delta per NG tokens instead of per token, NG times fewer registers held in flight."""
    u_row, dl_row, B_rows, C_rows = rows
    s_u_t, s_d_t, s_B_t, s_C_t = strides
    u_t = u_row + t0 * s_u_t
    dl_t = dl_row + t0 * s_d_t
    B_t = ()
    C_t = ()
    for k in tl.static_range(len(B_rows)):
        B_t = B_t + (B_rows[k] + t0 * s_B_t,)
        C_t = C_t + (C_rows[k] + t0 * s_C_t,)
    us = ()
    dls = ()
    Bs = ()
    Cs = ()
    if SHFL:
        for q in tl.static_range(BLOCK_T // NG):
            cm = cmask
            if MASK_T:
                inside = t0 + q * NG + g < T
                cm = inside if cm is None else cm & inside
            uq = _load0(u_t + q * NG * s_u_t, cm).to(tl.uint16, bitcast=True).to(tl.uint32)
            dq = _load0(dl_t + q * NG * s_d_t, cm).to(tl.uint16, bitcast=True).to(tl.uint32)
            us = us + (uq | (dq << 16),)
    for i in tl.static_range(BLOCK_T):
        cm = cmask
        if MASK_T:
            inside = t0 + i < T
            cm = inside if cm is None else cm & inside
        if not SHFL:
            us = us + (_load0(u_t + i * s_u_t, cm),)
            dls = dls + (_load0(dl_t + i * s_d_t, cm),)
        Bi = ()
        Ci = ()
        for k in tl.static_range(len(B_rows)):
            nm = None if nmask is None else nmask[k]
            if MASK_T:
                nm = inside if nm is None else nm & inside
            Bi = Bi + (_load0(B_t[k] + i * s_B_t, nm),)
            Ci = Ci + (_load0(C_t[k] + i * s_C_t, nm),)
        Bs = Bs + (Bi,)
        Cs = Cs + (Ci,)
    return us, dls, Bs, Cs


@triton.jit
def _load0(ptr, mask, other=0):
    """tl.load, `other` (0) where masked; mask None: no mask (nor its instructions)."""
    if mask is None:
        x = tl.load(ptr)
    else:
        x = tl.load(ptr, mask=mask, other=other)
    return x


@triton.jit
def _split_tile(
    h, inputs, A2, Dw, BLOCK_T: tl.constexpr, NG: tl.constexpr, STATE_T: tl.constexpr, PAIRS: tl.constexpr,
    HAS_D: tl.constexpr, STORE_STATES: tl.constexpr, SHFL: tl.constexpr = False, src=None, dbias=0.0,
    SOFTPLUS: tl.constexpr = False, ASM: tl.constexpr = False,
):
    """BLOCK_T tokens of `selective_scan_fwd_split_kernel` from their `_split_load`ed inputs, no
    stores: returns h (a tuple of chunks) and what `_split_store` writes: y per token in the
    output's layout (fp32), and the entering state of every token i with i % STATE_T == 0.
    dbias, SOFTPLUS: the time step's activation (`_delta_act`)."""
    us, dls, Bs, Cs = inputs
    NW: tl.constexpr = us[0].shape[0] // 32  # warps
    CW: tl.constexpr = 32 // NG  # channels per warp
    ys = ()
    hs = ()
    for i in tl.static_range(BLOCK_T):
        if STORE_STATES:
            if i % STATE_T == 0:  # (the launcher makes one of BLOCK_T, STATE_T divide the other)
                hs = hs + (h,)
        if SHFL:  # token i's word from the lanes of group i % NG (`_split_load`); src: their lane ids
            w = _shfl_idx(us[i // NG], src[i % NG])
            u = (w << 16).to(tl.float32, bitcast=True)
            dl = (w & 0xFFFF0000).to(tl.float32, bitcast=True)
        else:
            u = _to_f32(us[i])
            dl = _to_f32(dls[i])
        dl = _delta_act(dl, dbias, SOFTPLUS, ASM)
        dlu = (dl * u)[None, :]
        if HAS_D:
            yp = Dw * u
        else:
            yp = tl.zeros_like(u)
        hn = ()
        for k in tl.static_range(len(h)):
            if PAIRS:
                Bt = _pairs_f32(Bs[i][k])
                Ct = _pairs_f32(Cs[i][k])
            else:
                Bt = _to_f32(Bs[i][k])
                Ct = _to_f32(Cs[i][k])
            hk = tl.fma(tl.exp2(dl[None, :] * A2[k]), h[k], Bt * dlu)  # one dependent op per token
            yp += tl.sum(Ct * hk, axis=0)  # (W,): this lane's states
            hn = hn + (hk,)
        h = hn
        yp = tl.permute(tl.reshape(yp, (NW, NG, CW)), (1, 0, 2))  # (NG, NW, CW)
        ys = ys + (tl.broadcast_to(tl.sum(yp, axis=0, keep_dims=True), (NG, NW, CW)),)  # over a channel's lanes
    return h, (ys, hs)


@triton.jit
def _split_store(out, t0, y_row, ymask, states_row, cn_mask, state_stride, s_y_t, BLOCK_T: tl.constexpr,
                 STATE_T: tl.constexpr, STORE_STATES: tl.constexpr):
    """The stores of one `_split_tile` (tokens t0 .. t0 + BLOCK_T - 1): y, and the states."""
    ys, hs = out
    if STORE_STATES:
        for j in tl.static_range(len(hs)):
            t = t0 + j * STATE_T
            for k in tl.static_range(len(states_row)):
                sm = cn_mask[k] & (t % STATE_T == 0)
                tl.store(states_row[k] + (t // STATE_T) * state_stride, hs[j][k], mask=sm)
    y_t = y_row + t0 * s_y_t
    for i in tl.static_range(BLOCK_T):
        tl.store(y_t + i * s_y_t, ys[i].to(y_row.dtype.element_ty), mask=ymask)


@triton.jit
def _pairs_f32(x):
    """(P, W) uint32, each two bf16 (little-endian: the even state in the low half), as the
    (2P, W) fp32 tile of states 2p, 2p + 1 (a bf16 is the top half of its fp32)."""
    lo = (x << 16).to(tl.float32, bitcast=True)
    hi = (x & 0xFFFF0000).to(tl.float32, bitcast=True)
    z = tl.permute(tl.join(lo, hi), (0, 2, 1))  # (P, 2, W)
    return tl.reshape(z, (2 * x.shape[0], x.shape[1]))


@without_coalesce  # (kernels/_triton.py: minutes of compile time, no change to the code)
@triton.jit
def selective_scan_bwd_split_kernel(
    u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, states_ptr, dy_ptr, dfinal_ptr,
    du_ptr, ddl_ptr, dB_part_ptr, dC_part_ptr, dA_part_ptr, dD_part_ptr, dinit_ptr,
    T, CH, N: tl.constexpr, ntiles, plane_g, plane_c,
    s_u_b, s_u_t: tl.constexpr, s_u_c,
    s_d_b, s_d_t: tl.constexpr, s_d_c,
    s_B_b, s_B_t: tl.constexpr, s_B_n,
    s_C_b, s_C_t: tl.constexpr, s_C_n,
    s_dy_b, s_dy_t: tl.constexpr, s_dy_c,
    s_du_b, s_du_t: tl.constexpr, s_du_c,
    s_dd_b, s_dd_t: tl.constexpr, s_dd_c,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, NG: tl.constexpr, CT: tl.constexpr,
    PAIRS: tl.constexpr, EVEN_C: tl.constexpr, RECOMPUTE_A: tl.constexpr, PREFETCH: tl.constexpr,
    RS_G: tl.constexpr, RS_C: tl.constexpr, ASM: tl.constexpr,
    HAS_D: tl.constexpr, HAS_DFINAL: tl.constexpr, STORE_DINIT: tl.constexpr,
    db_ptr=None, ddb_part_ptr=None, HAS_BIAS: tl.constexpr = False, SOFTPLUS: tl.constexpr = False,
):
    """The backward in the lane layout of the split forward, token by token: every lane owns NS =
    BLOCK_N / NG states of CT channels (CT * NS values of h, and of the gradient state, in its
    registers), so that both sums of the backward are mostly in-thread:

    - over a channel's states (du_t, ddelta_t): NS in-thread, then log2(NG) shuffle rounds;
    - over channels (dB_t, dC_t, shared by all channels): CT in-thread, then log2(32 / NG)
      shuffle rounds over the lanes of a warp, across warps (num_warps > 1) through shared
      memory; each program writes its partial sum (deterministic), the launcher adds them.

    The time axis is walked in reverse, one tile of BLOCK_T tokens at a time. Per tile: the
    forward is recomputed token by token from the state entering the tile (stored by the forward,
    every BLOCK_T tokens), keeping h_t of every token of the tile in registers (and a_t, unless
    RECOMPUTE_A: then the backward recomputes the decay instead, one more exp2 per value and
    BLOCK_T * CT * NS fewer registers); then the tokens in reverse:

        g_t = C_t dy_t + a_{t+1} g_{t+1}       (the carry: a_{t+1} g_{t+1}, from the token after)
        a_t h_{t-1} = h_t - delta_t u_t B_t      du_t = delta_t sum_n g_t B_t + D dy_t
        ddelta_t = u_t sum_n g_t B_t + sum_n A g_t a_t h_{t-1}
        dA += g_t delta_t a_t h_{t-1}      dB_t = sum_c g_t delta_t u_t      dC_t = sum_c dy_t h_t

    PREFETCH: the next tile's inputs are loaded before the current tile computes (twice the
    input registers).

    RS_G / RS_C: the sums over lanes as reduce-scatters (`_reduce_scatter`) instead of
    all-reduces: a lane's V values over L lanes in log2(L) rounds of halving exchanges, V / 2 +
    V / 4 + ... shuffles instead of V log2(L), each lane left with V / L of the sums (and one
    store per token instead of one per value). RS_G: du and ddelta (2 CT values per lane over the
    NG lanes of a channel; du and ddelta are the two planes of one buffer, plane_g elements
    apart); RS_C: dB and dC (2 NS values over the CW lanes of a group, one warp per program;
    planes plane_c apart). ASM: the shuffles as PTX shfl.sync (GPU); else tl.gather (Triton's
    interpreter). A sequence whose length is not a multiple of BLOCK_T has its last tile
    (the first one walked) masked: tokens past T read delta = 0 (decay 1) and dy = 0, so the
    carry passes through them unchanged.

    Lanes: (warp, group, lane-channel), lane-channel fastest, as in the split forward; channel j
    of a lane is pid * BLOCK_C + warp * CW * CT + j * CW + lane-channel (CW = 32 / NG). Grid
    (cdiv(CH, BLOCK_C), batch). dB/dC partials fp32 (cdiv(CH, BLOCK_C), batch, T, N); dA
    partial fp32 (batch, CH, N); dD partial fp32 (batch, CH); dinit fp32 (batch, CH, N); states
    fp32 (batch, ntiles, CH, N). B, C as uint32 pairs of bf16 states with PAIRS (see the
    forward).

    SOFTPLUS (the forward's): delta is the time step before softplus(delta + bias); each tile
    recomputes the activation once (`_delta_act`), and ddelta is the gradient of the input delta:
    the activation's ddelta times softplus' = sigmoid(x) = 1 - e^(-softplus(x)): with RS_G on the
    reduce-scatter's kept sums (once per value), else per lane before its sums. HAS_BIAS: the
    bias's partial sums over time, fp32 (batch, 1, CH) with RS_G (the lane keeping a channel's
    ddelta holds all of it), else (batch, NG, CH) (each lane's own states' share); the launcher
    adds them. Tokens past T read delta = -inf then: softplus 0."""
    NS: tl.constexpr = BLOCK_N // NG
    CW: tl.constexpr = 32 // NG
    NW: tl.constexpr = BLOCK_C // (CW * CT)
    W: tl.constexpr = 32 * NW
    pid_c = tl.program_id(0)
    b = tl.program_id(1)
    lane = tl.arange(0, W)
    g = (lane // CW) % NG
    c0 = pid_c * BLOCK_C + (lane // 32) * (CW * CT) + lane % CW
    offs_n = ()
    nmask = ()
    for s in tl.static_range(NS):
        offs_n = offs_n + (g * NS + s,)
        nmask = nmask + (g * NS + s < N,)
    # per channel j: its (W,) channel ids, masks, rows of u / delta / dy, the (W,) rows of A
    offs_c = ()
    cmask = ()
    A2 = ()
    Dw = ()
    u_rows = ()
    dl_rows = ()
    dy_rows = ()
    for j in tl.static_range(CT):
        c = c0 + j * CW
        offs_c = offs_c + (c,)
        cm = c < CH
        cmask = cmask + (cm,)
        aj = ()
        for s in tl.static_range(NS):
            aj = aj + (tl.load(A_ptr + c * N + offs_n[s], mask=cm & nmask[s], other=0.0),)
        A2 = A2 + (aj,)
        if HAS_D:  # on the first lane of each channel only: the sum over lanes adds it once
            Dw = Dw + (tl.load(D_ptr + c, mask=cm & (g == 0), other=0.0),)
        u_rows = u_rows + (u_ptr + b * s_u_b + c * s_u_c,)
        dl_rows = dl_rows + (dl_ptr + b * s_d_b + c * s_d_c,)
        dy_rows = dy_rows + (dy_ptr + b * s_dy_b + c * s_dy_c,)
    cm_in = None if EVEN_C else cmask
    nm_in = None
    B_rows = ()
    C_rows = ()
    if PAIRS:  # NS / 2 uint32 pairs of states per lane
        B32 = B_ptr.to(tl.pointer_type(tl.uint32)) + (b * s_B_b) // 2
        C32 = C_ptr.to(tl.pointer_type(tl.uint32)) + (b * s_C_b) // 2
        pm = ()
        for p in tl.static_range(NS // 2):
            B_rows = B_rows + (B32 + g * (NS // 2) + p,)
            C_rows = C_rows + (C32 + g * (NS // 2) + p,)
            pm = pm + (g * (NS // 2) + p < N // 2,)
        if N != BLOCK_N:
            nm_in = pm
        sB_t: tl.constexpr = s_B_t // 2
        sC_t: tl.constexpr = s_C_t // 2
    else:
        for s in tl.static_range(NS):
            B_rows = B_rows + (B_ptr + b * s_B_b + offs_n[s] * s_B_n,)
            C_rows = C_rows + (C_ptr + b * s_C_b + offs_n[s] * s_C_n,)
        if N != BLOCK_N:
            nm_in = nmask
        sB_t: tl.constexpr = s_B_t
        sC_t: tl.constexpr = s_C_t
    rows = (u_rows, dl_rows, dy_rows, B_rows, C_rows)
    strides = (s_u_t, s_d_t, s_dy_t, sB_t, sC_t)
    # the outputs: du, ddelta in the layout of the sums over a channel's lanes, (NG, NW, CW)
    oc = (pid_c * BLOCK_C + tl.arange(0, NW)[None, :, None] * (CW * CT) + tl.arange(0, CW)[None, None, :]
          + 0 * tl.arange(0, NG)[:, None, None])
    du_rows = ()
    dd_rows = ()
    o_mask = ()
    for j in tl.static_range(CT):
        du_rows = du_rows + (du_ptr + b * s_du_b + (oc + j * CW) * s_du_c,)
        dd_rows = dd_rows + (ddl_ptr + b * s_dd_b + (oc + j * CW) * s_dd_c,)
        o_mask = o_mask + (oc + j * CW < CH,)
    o_mask = None if EVEN_C else o_mask
    # dB, dC partials: the sums over the program's channels, (NG,) per state: n = group * NS + s
    gn = tl.arange(0, NG) * NS
    part_row = dB_part_ptr + (pid_c * tl.num_programs(1) + b) * T * N
    partC_row = dC_part_ptr + (pid_c * tl.num_programs(1) + b) * T * N
    outs = (du_rows, dd_rows, part_row, partC_row, gn)
    # reduce-scatter stores: lane (group g, lane-channel cw) keeps the sums of values
    # g * VG + m (RS_G: du of channel v < CT, else ddelta of channel v - CT) and cw * VC + m
    # (RS_C: dB of state v < NS, else dC of state v - NS)
    VG: tl.constexpr = 2 * CT // NG if RS_G else 1
    VC: tl.constexpr = 2 * NS // CW if RS_C else 1
    rs_g = ()
    rs_c = ()
    cw = lane % CW
    for m in tl.static_range(VG):
        v = g * VG + m
        c = c0 + (v % CT) * CW
        rs_g = rs_g + ((du_ptr + tl.where(v < CT, 0, plane_g) + b * s_du_b + c * s_du_c, c < CH),)
    for m in tl.static_range(VC):
        v = cw * VC + m
        n = g * NS + v % NS
        rs_c = rs_c + ((part_row + tl.where(v < NS, 0, plane_c) + n, n < N),)
    rs = (lane, rs_g, rs_c)
    st_rows = ()
    for j in tl.static_range(CT):
        sj = ()
        for s in tl.static_range(NS):
            sj = sj + (states_ptr + b * ntiles * CH * N + offs_c[j] * N + offs_n[s],)
        st_rows = st_rows + (sj,)
    cn_mask = ()
    for j in tl.static_range(CT):
        mj = ()
        for s in tl.static_range(NS):
            mj = mj + (cmask[j] & nmask[s],)
        cn_mask = cn_mask + (mj,)

    carry = ()
    dA = ()
    dD = ()
    dDb = ()
    for j in tl.static_range(CT):
        cj = ()
        zj = ()
        for s in tl.static_range(NS):
            if HAS_DFINAL:
                cj = cj + (tl.load(dfinal_ptr + b * CH * N + offs_c[j] * N + offs_n[s], mask=cn_mask[j][s], other=0.0),)
            else:
                cj = cj + (tl.zeros((W,), dtype=tl.float32),)
            zj = zj + (tl.zeros((W,), dtype=tl.float32),)
        carry = carry + (cj,)
        dA = dA + (zj,)
        dD = dD + (tl.zeros((W,), dtype=tl.float32),)

    # the bias's gradient: per kept value of the reduce-scatter (RS_G), else per channel
    for _m in tl.static_range(2 * CT // NG if RS_G else CT):
        dDb = dDb + (tl.zeros((W,), dtype=tl.float32),)
    bias = (offs_c, cmask)  # (the lanes' channels: where the tiles read the bias)

    nfull = T // BLOCK_T
    # the last tile if it is partial (0 or 1 iterations), masked
    for k in range(nfull, ntiles):
        inp = _bwd_split_load(k * BLOCK_T, T, rows, strides, cm_in, nm_in, BLOCK_T, True, SOFTPLUS)
        s_in = _bwd_split_states(st_rows, k * CH * N, cn_mask)
        carry, dA, dD, dDb, out = _bwd_split_tile(inp, s_in, carry, dA, dD, dDb, A2, Dw, db_ptr, bias, rs, BLOCK_T, NG,
                                                  PAIRS, RECOMPUTE_A, HAS_D, RS_G, RS_C, ASM, SOFTPLUS, HAS_BIAS)
        _bwd_split_store(out, k * BLOCK_T, T, N, outs, rs, o_mask, s_du_t, s_dd_t, BLOCK_T, True, RS_G, RS_C)
    # the full tiles, last to first
    if PREFETCH:  # (masked: nfull may be 0; the loop reads tiles >= 0 only)
        cur = _bwd_split_load((nfull - 1) * BLOCK_T, T, rows, strides, cm_in, nm_in, BLOCK_T, True, SOFTPLUS)
        s_cur = _bwd_split_states(st_rows, tl.maximum(nfull - 1, 0) * CH * N, cn_mask)
    for i in range(nfull):
        k = nfull - 1 - i
        if PREFETCH:
            kn = tl.maximum(k - 1, 0)
            nxt = _bwd_split_load(kn * BLOCK_T, T, rows, strides, cm_in, nm_in, BLOCK_T, False, SOFTPLUS)
            s_nxt = _bwd_split_states(st_rows, kn * CH * N, cn_mask)
        else:
            cur = _bwd_split_load(k * BLOCK_T, T, rows, strides, cm_in, nm_in, BLOCK_T, False, SOFTPLUS)
            s_cur = _bwd_split_states(st_rows, k * CH * N, cn_mask)
        carry, dA, dD, dDb, out = _bwd_split_tile(cur, s_cur, carry, dA, dD, dDb, A2, Dw, db_ptr, bias, rs, BLOCK_T, NG,
                                                  PAIRS, RECOMPUTE_A, HAS_D, RS_G, RS_C, ASM, SOFTPLUS, HAS_BIAS)
        _bwd_split_store(out, k * BLOCK_T, T, N, outs, rs, o_mask, s_du_t, s_dd_t, BLOCK_T, False, RS_G, RS_C)
        if PREFETCH:
            cur = nxt
            s_cur = s_nxt
    for j in tl.static_range(CT):
        for s in tl.static_range(NS):
            tl.store(dA_part_ptr + b * CH * N + offs_c[j] * N + offs_n[s], dA[j][s], mask=cn_mask[j][s])
            if STORE_DINIT:
                tl.store(dinit_ptr + b * CH * N + offs_c[j] * N + offs_n[s], carry[j][s], mask=cn_mask[j][s])
        if HAS_D:
            tl.store(dD_part_ptr + b * CH + offs_c[j], dD[j], mask=cmask[j] & (g == 0))
        if HAS_BIAS and not RS_G:
            tl.store(ddb_part_ptr + (b * NG + g) * CH + offs_c[j], dDb[j], mask=cmask[j])
    if HAS_BIAS and RS_G:  # one lane per channel holds its sum: row 0 of (batch, 1, CH)
        for m in tl.static_range(len(dDb)):
            v = g * len(dDb) + m
            c = c0 + (v % CT) * CW
            tl.store(ddb_part_ptr + b * CH + c, dDb[m], mask=(v >= CT) & (c < CH))


@triton.jit
def _bwd_split_states(st_rows, off, cn_mask):
    """The state entering a tile (off: its offset in `states`), as st_rows: (channel, state)."""
    out = ()
    for j in tl.static_range(len(st_rows)):
        sj = ()
        for s in tl.static_range(len(st_rows[j])):
            sj = sj + (tl.load(st_rows[j][s] + off, mask=cn_mask[j][s], other=0.0),)
        out = out + (sj,)
    return out


@triton.jit
def _bwd_split_load(t0, T, rows, strides, cmask, nmask, BLOCK_T: tl.constexpr, MASK_T: tl.constexpr,
                    SOFTPLUS: tl.constexpr = False):
    """(u, delta, dy, B, C) of tokens t0 .. t0 + BLOCK_T - 1, in their dtype: us[i][j] etc. per
    token i and channel j of the lane, Bs[i][p] per state (PAIRS: per uint32 pair of states).
    MASK_T: tokens outside [0, T) read 0 (delta -inf with SOFTPLUS: its softplus is 0). cmask /
    nmask: tuples over channels / states, or None."""
    u_rows, dl_rows, dy_rows, B_rows, C_rows = rows
    s_u_t, s_d_t, s_dy_t, s_B_t, s_C_t = strides
    us = ()
    dls = ()
    dys = ()
    Bs = ()
    Cs = ()
    for i in tl.static_range(BLOCK_T):
        inside = None
        if MASK_T:
            inside = (t0 + i < T) & (t0 + i >= 0)
        ui = ()
        di = ()
        yi = ()
        for j in tl.static_range(len(u_rows)):
            cm = None if cmask is None else cmask[j]
            if MASK_T:
                cm = inside if cm is None else cm & inside
            ui = ui + (_load0(u_rows[j] + t0 * s_u_t + i * s_u_t, cm),)
            di = di + (_load0(dl_rows[j] + t0 * s_d_t + i * s_d_t, cm, float("-inf") if SOFTPLUS else 0.0),)
            yi = yi + (_load0(dy_rows[j] + t0 * s_dy_t + i * s_dy_t, cm),)
        Bi = ()
        Ci = ()
        for p in tl.static_range(len(B_rows)):
            nm = None if nmask is None else nmask[p]
            if MASK_T:
                nm = inside if nm is None else nm & inside
            Bi = Bi + (_load0(B_rows[p] + t0 * s_B_t + i * s_B_t, nm),)
            Ci = Ci + (_load0(C_rows[p] + t0 * s_C_t + i * s_C_t, nm),)
        us = us + (ui,)
        dls = dls + (di,)
        dys = dys + (yi,)
        Bs = Bs + (Bi,)
        Cs = Cs + (Ci,)
    return us, dls, dys, Bs, Cs


@triton.jit
def _states_f32(x, PAIRS: tl.constexpr):
    """A lane's B_t or C_t entries as a tuple of (W,) fp32 vectors, one per state (PAIRS: from
    uint32 pairs of bf16, the even state in the low half)."""
    out = ()
    for p in tl.static_range(len(x)):
        if PAIRS:
            out = out + ((x[p] << 16).to(tl.float32, bitcast=True), (x[p] & 0xFFFF0000).to(tl.float32, bitcast=True))
        else:
            out = out + (_to_f32(x[p]),)
    return out


@triton.jit
def _group_sum(x, NG: tl.constexpr):
    """(W,) per-lane values -> the sum over each channel's NG lanes, (NG, NW, CW), the same for
    every group (as the split forward's y)."""
    NW: tl.constexpr = x.shape[0] // 32
    CW: tl.constexpr = 32 // NG
    y = tl.permute(tl.reshape(x, (NW, NG, CW)), (1, 0, 2))
    return tl.broadcast_to(tl.sum(y, axis=0, keep_dims=True), (NG, NW, CW))


@triton.jit
def _channel_sum(x, NG: tl.constexpr):
    """(W,) per-lane values -> the sum over the program's channels per group, (NG,)."""
    NW: tl.constexpr = x.shape[0] // 32
    CW: tl.constexpr = 32 // NG
    return tl.sum(tl.sum(tl.reshape(x, (NW, NG, CW)), axis=2), axis=0)


@triton.jit
def _xor_lane(x, lane, d: tl.constexpr, ASM: tl.constexpr):
    """(W,) fp32 x of lane (lane ^ d) of the same warp (d < 32)."""
    if ASM:
        src = ((lane % 32) ^ d).to(tl.int32)
        return _shfl_idx(x.to(tl.uint32, bitcast=True), src).to(tl.float32, bitcast=True)
    else:
        return tl.gather(x, lane ^ d, 0)


@triton.jit
def _rs_round(vals, lane, d: tl.constexpr, ASM: tl.constexpr):
    """One halving exchange: lanes lane and lane ^ d pair value k with value k + V / 2; the lane
    whose bit d is set keeps the upper half (adding its partner's copy), the other the lower."""
    half: tl.constexpr = len(vals) // 2
    up = (lane & d) != 0
    out = ()
    for k in tl.static_range(half):
        keep = tl.where(up, vals[k + half], vals[k])
        send = tl.where(up, vals[k], vals[k + half])
        out = out + (keep + _xor_lane(send, lane, d, ASM),)
    return out


@triton.jit
def _reduce_scatter(vals, lane, D0: tl.constexpr, L: tl.constexpr, ASM: tl.constexpr):
    """vals: a tuple of V (W,) vectors, V a multiple of L (both powers of 2). Sums every value
    over the L lanes lane ^ (D0 * i), i < L, and returns this lane's V / L of the sums: value
    r * V / L + m (m < V / L), r = (lane // D0) % L."""
    if L >= 32:
        vals = _rs_round(vals, lane, D0 * 16, ASM)
    if L >= 16:
        vals = _rs_round(vals, lane, D0 * 8, ASM)
    if L >= 8:
        vals = _rs_round(vals, lane, D0 * 4, ASM)
    if L >= 4:
        vals = _rs_round(vals, lane, D0 * 2, ASM)
    if L >= 2:
        vals = _rs_round(vals, lane, D0, ASM)
    return vals


@triton.jit
def _bwd_split_tile(inputs, s_in, carry, dA, dD, dDb, A2, Dw, db_ptr, bias, rs, BLOCK_T: tl.constexpr,
                    NG: tl.constexpr, PAIRS: tl.constexpr, RECOMPUTE_A: tl.constexpr, HAS_D: tl.constexpr,
                    RS_G: tl.constexpr, RS_C: tl.constexpr, ASM: tl.constexpr, SOFTPLUS: tl.constexpr,
                    HAS_BIAS: tl.constexpr):
    """One tile of `selective_scan_bwd_split_kernel` (no loads, no stores): the forward
    recomputed from s_in, then the tokens in reverse. Returns the carry, dA, dD, dDb (SOFTPLUS:
    the lane's share of the bias's gradient, per kept value with RS_G, else per channel; the bias
    read from db_ptr at bias = (the lane's channels, their masks) once per tile) and what
    `_bwd_split_store` writes: du, ddelta per (token, channel), dB, dC per (token, state). (Storing
    each token's results as soon as they are summed, inside the reverse walk, made ptxas spill:
    346 bytes at the default launch, sm_90a, against none.)"""
    us, dls, dys, Bs, Cs = inputs
    CT: tl.constexpr = len(A2)
    NS: tl.constexpr = len(A2[0])
    if SOFTPLUS:  # the time steps, once per tile (the reverse walk reads them again)
        offs_c, cmask = bias
        bj = ()
        for j in tl.static_range(CT):
            if HAS_BIAS:  # (reloaded per tile, L1: two registers fewer across the loop)
                bj = bj + (tl.load(db_ptr + offs_c[j], mask=cmask[j], other=0.0),)
            else:
                bj = bj + (0.0,)
        dla = ()
        for i in tl.static_range(BLOCK_T):
            di = ()
            for j in tl.static_range(CT):
                di = di + (_delta_act(_to_f32(dls[i][j]), bj[j], True, ASM),)
            dla = dla + (di,)
        dls = dla
    A2h = ()
    for j in tl.static_range(CT):
        aj = ()
        for s in tl.static_range(NS):
            aj = aj + (A2[j][s] * 0.5,)
        A2h = A2h + (aj,)
    h = s_in
    hs = ()  # h_t after every token of the tile
    decays = ()
    for i in tl.static_range(BLOCK_T):
        Bf = _states_f32(Bs[i], PAIRS)
        hn = ()
        ai = ()
        for j in tl.static_range(CT):
            dl = _to_f32(dls[i][j])
            dlu = dl * _to_f32(us[i][j])
            hj = ()
            aj = ()
            for s in tl.static_range(NS):
                a = tl.exp2(dl * A2[j][s])
                hj = hj + (tl.fma(a, h[j][s], Bf[s] * dlu),)
                aj = aj + (a,)
            hn = hn + (hj,)
            ai = ai + (aj,)
        h = hn
        hs = hs + (h,)
        decays = decays + (ai,)
    dus = ()
    ddls = ()
    dBs = ()
    dCs = ()
    for r in tl.static_range(BLOCK_T - 1, -1, -1):  # the tokens in reverse
        Bf = _states_f32(Bs[r], PAIRS)
        Cf = _states_f32(Cs[r], PAIRS)
        dBp = ()
        dCp = ()
        for _s in tl.static_range(NS):
            dBp = dBp + (tl.zeros_like(Bf[0]),)
            dCp = dCp + (tl.zeros_like(Bf[0]),)
        du_i = ()
        dd_i = ()
        carry_n = ()
        dA_n = ()
        dD_n = ()
        dDb_n = ()
        for j in tl.static_range(CT):
            dl = _to_f32(dls[r][j])
            u = _to_f32(us[r][j])
            dy = _to_f32(dys[r][j])
            dlu = dl * u
            dl2 = dl + dl
            sB = tl.zeros_like(dl)
            sA = tl.zeros_like(dl)
            cj = ()
            aj = ()
            dBq = ()
            dCq = ()
            for s in tl.static_range(NS):
                gs = tl.fma(Cf[s], dy, carry[j][s])
                if RECOMPUTE_A:  # (2 delta) (A2 / 2): the same value, not merged with the forward's by CSE
                    a = tl.exp2(dl2 * A2h[j][s])
                else:
                    a = decays[r][j][s]
                hi = hs[r][j][s]
                ah = tl.fma(-Bf[s], dlu, hi)  # a_t h_{t-1} = h_t - delta_t u_t B_t
                gah = gs * ah
                sB = tl.fma(gs, Bf[s], sB)
                sA = tl.fma(gah, A2[j][s], sA)
                aj = aj + (tl.fma(gah, dl, dA[j][s]),)
                dBq = dBq + (tl.fma(gs, dlu, dBp[s]),)
                dCq = dCq + (tl.fma(hi, dy, dCp[s]),)
                cj = cj + (a * gs,)
            dBp = dBq
            dCp = dCq
            carry_n = carry_n + (cj,)
            dA_n = dA_n + (aj,)
            pdu = sB * dl
            if HAS_D:
                pdu = tl.fma(Dw[j], dy, pdu)
                dD_n = dD_n + (tl.fma(dy, u, dD[j]),)
            pdd = tl.fma(sA, 0.6931471805599453, sB * u)  # A = A2 ln 2
            if SOFTPLUS and not RS_G:  # d softplus(x) / dx = sigmoid(x) = 1 - e^(-delta)
                pdd = pdd * _softplus_grad(dl, ASM)
                dDb_n = dDb_n + (dDb[j] + pdd,)
            if RS_G:
                du_i = du_i + (pdu,)
                dd_i = dd_i + (pdd,)
            else:
                du_i = du_i + (_group_sum(pdu, NG),)
                dd_i = dd_i + (_group_sum(pdd, NG),)
        carry = carry_n
        dA = dA_n
        if HAS_D:
            dD = dD_n
        if SOFTPLUS and not RS_G:
            dDb = dDb_n
        lane = rs[0]
        if RS_G:  # du_i: the sums this lane keeps; dd_i unused
            du_i = _reduce_scatter(du_i + dd_i, lane, 32 // NG, NG, ASM)
            if SOFTPLUS:  # the kept ddelta sums times sigmoid (once per value, not per channel)
                grp = (lane // (32 // NG)) % NG
                kept = ()
                dDb_n = ()
                for m in tl.static_range(len(du_i)):
                    v = grp * len(du_i) + m
                    dl = _to_f32(dls[r][0])
                    for j in tl.static_range(1, CT):
                        dl = tl.where(v - CT == j, _to_f32(dls[r][j]), dl)
                    val = tl.where(v >= CT, du_i[m] * _softplus_grad(dl, ASM), du_i[m])
                    kept = kept + (val,)
                    dDb_n = dDb_n + (dDb[m] + tl.where(v >= CT, val, 0.0),)
                du_i = kept
                dDb = dDb_n
        dBi = ()
        dCi = ()
        if RS_C:
            dBi = _reduce_scatter(dBp + dCp, lane, 1, 32 // NG, ASM)
        else:
            for s in tl.static_range(NS):
                dBi = dBi + (_channel_sum(dBp[s], NG),)
                dCi = dCi + (_channel_sum(dCp[s], NG),)
        dus = (du_i,) + dus
        ddls = (dd_i,) + ddls
        dBs = (dBi,) + dBs
        dCs = (dCi,) + dCs
    return carry, dA, dD, dDb, (dus, ddls, dBs, dCs)


@triton.jit
def _bwd_split_store(out, t0, T, N: tl.constexpr, outs, rs, o_mask, s_du_t: tl.constexpr, s_dd_t: tl.constexpr,
                     BLOCK_T: tl.constexpr, MASK_T: tl.constexpr, RS_G: tl.constexpr, RS_C: tl.constexpr):
    """The stores of one `_bwd_split_tile` (tokens t0 .. t0 + BLOCK_T - 1): du and ddelta per
    channel of the lane, the program's partial sums of dB and dC per state."""
    dus, ddls, dBs, dCs = out
    du_rows, dd_rows, dB_row, dC_row, gn = outs
    for i in tl.static_range(BLOCK_T):
        inside = None
        if MASK_T:
            inside = t0 + i < T
        if RS_G:
            for m in tl.static_range(len(rs[1])):
                ptr, mk = rs[1][m]
                if MASK_T:
                    mk = mk & inside
                tl.store(ptr + (t0 + i) * s_du_t, dus[i][m].to(du_rows[0].dtype.element_ty), mask=mk)
        else:
            for j in tl.static_range(len(du_rows)):
                m = None if o_mask is None else o_mask[j]
                if MASK_T:
                    m = inside if m is None else m & inside
                tl.store(du_rows[j] + (t0 + i) * s_du_t, dus[i][j].to(du_rows[j].dtype.element_ty), mask=m)
                tl.store(dd_rows[j] + (t0 + i) * s_dd_t, ddls[i][j].to(dd_rows[j].dtype.element_ty), mask=m)
        if RS_C:
            for m in tl.static_range(len(rs[2])):
                ptr, mk = rs[2][m]
                if MASK_T:
                    mk = mk & inside
                tl.store(ptr + (t0 + i) * N, dBs[i][m], mask=mk)
        else:
            for s in tl.static_range(len(dBs[i])):
                m = gn + s < N
                if MASK_T:
                    m = m & inside
                tl.store(dB_row + (t0 + i) * N + gn + s, dBs[i][s], mask=m)
                tl.store(dC_row + (t0 + i) * N + gn + s, dCs[i][s], mask=m)

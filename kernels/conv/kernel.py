"""Triton kernels of the short causal depthwise conv fused with SiLU (`reference.py`).

Memory-bound: the forward reads x once (plus a K-1 row halo from cache) and writes y once,
with the bias and SiLU applied in registers, in the (batch, seqlen, channels) layout the
projections produce (no transposes).

The backward needs, for dx at row t, dpre = dy * SiLU'(pre) at rows t .. t+K-1:

    dx[t] = sum_j w[K-1-j] dpre[t+j],   dw[k] = sum_t dpre[t] x[t-K+1+k],   db = sum_t dpre[t]

`conv_bwd_stream_kernel` (the default, op.CONFIG["bwd"]["layout"] "stream") walks a segment of
SEG tokens of a block of channels one token at a time, each token a vector over the program's
lanes (VEC channels per lane): x and dpre of the last K-1 tokens stay in registers (a tuple
over tokens), so x and dy are read once, pre and dpre computed once per token, and dx of row t
is complete once dpre of row t+K-1 is. Tokens come in tiles of BLOCK_T, the next tile's loads
issued before this one computes; dweight and dbias are summed in registers over the segment,
one partial row per program that the launcher adds (deterministic, no atomics).
`conv_bwd_kernel` (layout "tile", the first one) takes (BLOCK_T, BLOCK_C) tiles and
recomputes pre at K shifted row offsets instead (no shift of a tile's rows in registers):
K x K loads of x per element, ~9x the memory floor on an H200 (docs/benchmarks.md section 9).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _pre(x_ptr, w_ptr, bias_ptr, b, t, offs_c, cmask, T, s_b, s_t, s_c, K: tl.constexpr, HAS_BIAS: tl.constexpr):
    """bias + sum_k w[c, k] x[t - (K-1) + k] for the rows t (fp32, (BLOCK_T, BLOCK_C))."""
    acc = tl.zeros((t.shape[0], offs_c.shape[0]), dtype=tl.float32)
    for k in tl.static_range(K):
        tk = t - (K - 1) + k
        m = (tk >= 0) & (tk < T)
        xk = tl.load(x_ptr + b * s_b + tk[:, None] * s_t + offs_c[None, :] * s_c,
                     mask=m[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        wk = tl.load(w_ptr + offs_c * K + k, mask=cmask, other=0.0).to(tl.float32)
        acc += wk[None, :] * xk
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_c, mask=cmask, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def conv_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr,
    T, CH,
    s_x_b, s_x_t, s_x_c,
    s_y_b, s_y_t, s_y_c,
    K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
):
    """Grid (cdiv(T, BLOCK_T), cdiv(CH, BLOCK_C), batch). w: (CH, K) contiguous."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2)
    cmask = offs_c < CH
    pre = _pre(x_ptr, w_ptr, bias_ptr, b, t, offs_c, cmask, T, s_x_b, s_x_t, s_x_c, K, HAS_BIAS)
    if ACT:
        y = pre * tl.sigmoid(pre)
    else:
        y = pre
    tl.store(y_ptr + b * s_y_b + t[:, None] * s_y_t + offs_c[None, :] * s_y_c, y.to(y_ptr.dtype.element_ty),
             mask=(t < T)[:, None] & cmask[None, :])


@triton.jit
def conv_bwd_kernel(
    x_ptr, w_ptr, bias_ptr, dy_ptr, dx_ptr, dw_part_ptr, db_part_ptr,
    T, CH,
    s_x_b, s_x_t, s_x_c,
    s_dy_b, s_dy_t, s_dy_c,
    s_dx_b, s_dx_t, s_dx_c,
    K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
):
    """Grid as the forward. dw_part: fp32 (batch * cdiv(T, BLOCK_T), CH, K); db_part: fp32
    (batch * cdiv(T, BLOCK_T), CH)."""
    pid_t = tl.program_id(0)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2)
    cmask = offs_c < CH
    part = b * tl.num_programs(0) + pid_t
    dx = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for j in tl.static_range(K):
        # dpre at rows t + j reaches dx[t] through the tap K-1-j
        tj = t + j
        mj = (tj < T)[:, None] & cmask[None, :]
        pre = _pre(x_ptr, w_ptr, bias_ptr, b, tj, offs_c, cmask, T, s_x_b, s_x_t, s_x_c, K, HAS_BIAS)
        dy = tl.load(dy_ptr + b * s_dy_b + tj[:, None] * s_dy_t + offs_c[None, :] * s_dy_c, mask=mj, other=0.0).to(tl.float32)
        if ACT:
            sg = tl.sigmoid(pre)
            dpre = dy * sg * (1.0 + pre * (1.0 - sg))
        else:
            dpre = dy
        w = tl.load(w_ptr + offs_c * K + (K - 1 - j), mask=cmask, other=0.0).to(tl.float32)
        dx += w[None, :] * dpre
        if j == 0:  # the parameter gradients of the rows t themselves
            for k in tl.static_range(K):
                tk = t - (K - 1) + k
                xk = tl.load(x_ptr + b * s_x_b + tk[:, None] * s_x_t + offs_c[None, :] * s_x_c,
                             mask=((tk >= 0) & (tk < T))[:, None] & cmask[None, :], other=0.0).to(tl.float32)
                tl.store(dw_part_ptr + (part * CH + offs_c) * K + k, tl.sum(dpre * xk, axis=0), mask=cmask)
            if HAS_BIAS:
                tl.store(db_part_ptr + part * CH + offs_c, tl.sum(dpre, axis=0), mask=cmask)
    tl.store(dx_ptr + b * s_dx_b + t[:, None] * s_dx_t + offs_c[None, :] * s_dx_c, dx.to(dx_ptr.dtype.element_ty),
             mask=(t < T)[:, None] & cmask[None, :])


@triton.jit
def _stream_prologue(x_ptr, w_ptr, bias_ptr, b, T0, CH, s_x_b, s_x_t, s_x_c,
                     K: tl.constexpr, BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr):
    """A stream program's channels (offsets, mask), taps (fp32, a tuple over k), bias (fp32, or
    0.0 without), x's offsets at row 0, and x of the K-1 rows before its segment T0 (fp32, 0
    before row 0: the causal padding), a tuple over rows."""
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = offs_c < CH
    w = ()
    for k in tl.static_range(K):
        w = w + (tl.load(w_ptr + offs_c * K + k, mask=cmask, other=0.0).to(tl.float32),)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_c, mask=cmask, other=0.0).to(tl.float32)
    else:
        bias = 0.0
    x_off = b * s_x_b + offs_c * s_x_c
    xw = ()
    for j in tl.static_range(K - 1):
        row = T0 - (K - 1) + j
        xw = xw + (tl.load(x_ptr + x_off + row * s_x_t, mask=(row >= 0) & cmask, other=0.0).to(tl.float32),)
    return offs_c, cmask, w, bias, x_off, xw


@triton.jit
def _stream_load(x_ptr, dy_ptr, t0, T, row_off, s_x_t, s_dy_t, cmask, BLOCK_T: tl.constexpr):
    """x and dy of rows t0 .. t0 + BLOCK_T - 1 (0 past T) as two tuples over rows, input dtype.
    row_off: (x offsets, dy offsets) of the program's channels at row 0."""
    xo, do = row_off
    xs = ()
    dys = ()
    for i in tl.static_range(BLOCK_T):
        m = (t0 + i < T) & cmask
        xs = xs + (tl.load(x_ptr + xo + (t0 + i) * s_x_t, mask=m, other=0.0),)
        dys = dys + (tl.load(dy_ptr + do + (t0 + i) * s_dy_t, mask=m, other=0.0),)
    return xs, dys


@triton.jit
def _stream_window(xw, xs, NR: tl.constexpr):
    """The K-1 rows before (xw, fp32) followed by the NR new rows xs converted to fp32."""
    xa = xw
    for i in tl.static_range(NR):
        xa = xa + (xs[i].to(tl.float32),)
    return xa


@triton.jit
def _stream_pre(xa, i: tl.constexpr, w, bias, K: tl.constexpr, HAS_BIAS: tl.constexpr):
    """pre of new row i of the window xa: bias + sum_k w[k] xa[i + k] (fp32)."""
    pre = w[0] * xa[i]
    for k in tl.static_range(1, K):
        pre = tl.fma(w[k], xa[i + k], pre)
    if HAS_BIAS:
        pre = pre + bias
    return pre


@triton.jit
def _stream_rows(xw, dpw, xs, dys, w, bias, dw, db, NR: tl.constexpr, K: tl.constexpr,
                 HAS_BIAS: tl.constexpr, ACT: tl.constexpr, ACC: tl.constexpr):
    """NR new rows r (their x, dy in xs, dys) after the K-1 rows before them (xw: x in fp32,
    dpw: dpre): dpre of the new rows, dx of the NR rows r - K + 1 (complete now), and with ACC
    their dweight (tuple over taps) and dbias added into dw, db. Returns (xw, dpw) of the last
    K-1 rows, the dx rows (fp32), dw, db."""
    xa = _stream_window(xw, xs, NR)
    da = dpw
    for i in tl.static_range(NR):
        pre = _stream_pre(xa, i, w, bias, K, HAS_BIAS)
        dyi = dys[i].to(tl.float32)
        if ACT:
            sg = tl.sigmoid(pre)
            dpre = dyi * sg * (1.0 + pre * (1.0 - sg))
        else:
            dpre = dyi
        da = da + (dpre,)
        if ACC:
            dwn = ()
            for k in tl.static_range(K):
                dwn = dwn + (tl.fma(dpre, xa[i + k], dw[k]),)
            dw = dwn
            db = db + dpre
    dxs = ()
    for i in tl.static_range(NR):
        dx = w[K - 1] * da[i]
        for j in tl.static_range(1, K):
            dx = tl.fma(w[K - 1 - j], da[i + j], dx)
        dxs = dxs + (dx,)
    xn = ()
    dn = ()
    for j in tl.static_range(K - 1):
        xn = xn + (xa[NR + j],)
        dn = dn + (da[NR + j],)
    return xn, dn, dxs, dw, db


@triton.jit
def _stream_store(dx_ptr, dxs, r0, T0, T, dx_off, s_dx_t, cmask, NR: tl.constexpr):
    """dx of rows r0 .. r0 + NR - 1 where T0 <= row < T (rows before T0 are the previous
    segment's)."""
    for i in tl.static_range(NR):
        r = r0 + i
        tl.store(dx_ptr + dx_off + r * s_dx_t, dxs[i].to(dx_ptr.dtype.element_ty),
                 mask=(r >= T0) & (r < T) & cmask)


@triton.jit
def conv_bwd_stream_kernel(
    x_ptr, w_ptr, bias_ptr, dy_ptr, dx_ptr, dw_part_ptr, db_part_ptr,
    T, CH, SEG,
    s_x_b, s_x_t, s_x_c,
    s_dy_b, s_dy_t, s_dy_c,
    s_dx_b, s_dx_t, s_dx_c,
    K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
):
    """Grid (cdiv(T, SEG), cdiv(CH, BLOCK_C), batch); SEG a multiple of BLOCK_T, 2 <= K <=
    BLOCK_T + 1. Program (s, cb, b) writes dx of rows s*SEG .. s*SEG + SEG - 1 and
    dw_part[b, s] (fp32 (batch, cdiv(T, SEG), CH, K)), db_part[b, s] (fp32 (batch,
    cdiv(T, SEG), CH)). Reads x from K-1 rows before the segment (0 before row 0) to BLOCK_T
    rows past it, dy from its first row to BLOCK_T rows past it. BLOCK_C channels over
    32 * num_warps lanes (Triton's default layout of a 1-D tensor: BLOCK_C / lanes consecutive
    channels per lane, one vector load each)."""
    seg = tl.program_id(0)
    b = tl.program_id(2)
    T0 = seg * SEG
    offs_c, cmask, w, bias, x_off, xw = _stream_prologue(x_ptr, w_ptr, bias_ptr, b, T0, CH, s_x_b, s_x_t, s_x_c,
                                                         K, BLOCK_C, HAS_BIAS)
    dy_off = b * s_dy_b + offs_c * s_dy_c
    dx_off = b * s_dx_b + offs_c * s_dx_c
    zero = tl.zeros((BLOCK_C,), dtype=tl.float32)
    dpw = ()
    for _ in tl.static_range(K - 1):  # no dpre before the segment (its dx rows are the previous one's)
        dpw = dpw + (zero,)
    dw = ()
    for _ in tl.static_range(K):
        dw = dw + (zero,)
    db = zero
    cur = _stream_load(x_ptr, dy_ptr, T0, T, (x_off, dy_off), s_x_t, s_dy_t, cmask, BLOCK_T)
    for i in range(SEG // BLOCK_T):
        t0 = T0 + i * BLOCK_T
        nxt = _stream_load(x_ptr, dy_ptr, t0 + BLOCK_T, T, (x_off, dy_off), s_x_t, s_dy_t, cmask, BLOCK_T)
        xw, dpw, dxs, dw, db = _stream_rows(xw, dpw, cur[0], cur[1], w, bias, dw, db, BLOCK_T, K, HAS_BIAS, ACT, True)
        _stream_store(dx_ptr, dxs, t0 - (K - 1), T0, T, dx_off, s_dx_t, cmask, BLOCK_T)
        cur = nxt
    # the K-1 rows past the segment (loaded as the next tile): their dpre completes the
    # segment's last K-1 rows of dx; their parameter gradients are the next segment's
    xs = ()
    dys = ()
    for j in tl.static_range(K - 1):
        xs = xs + (cur[0][j],)
        dys = dys + (cur[1][j],)
    _, _, dxs, dw, db = _stream_rows(xw, dpw, xs, dys, w, bias, dw, db, K - 1, K, HAS_BIAS, ACT, False)
    _stream_store(dx_ptr, dxs, T0 + SEG - (K - 1), T0, T, dx_off, s_dx_t, cmask, K - 1)
    part = b * tl.num_programs(0) + seg
    for k in tl.static_range(K):
        tl.store(dw_part_ptr + (part * CH + offs_c) * K + k, dw[k], mask=cmask)
    if HAS_BIAS:
        tl.store(db_part_ptr + part * CH + offs_c, db, mask=cmask)


@triton.jit
def _stream_load_x(x_ptr, t0, T, x_off, s_x_t, cmask, BLOCK_T: tl.constexpr):
    """x of rows t0 .. t0 + BLOCK_T - 1 (0 past T), a tuple over rows in x's dtype."""
    xs = ()
    for i in tl.static_range(BLOCK_T):
        xs = xs + (tl.load(x_ptr + x_off + (t0 + i) * s_x_t, mask=(t0 + i < T) & cmask, other=0.0),)
    return xs


@triton.jit
def conv_fwd_stream_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr,
    T, CH, SEG,
    s_x_b, s_x_t, s_x_c,
    s_y_b, s_y_t, s_y_c,
    K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
):
    """The forward as `conv_bwd_stream_kernel` walks time (op.CONFIG["fwd"]["layout"]
    "stream"): grid (cdiv(T, SEG), cdiv(CH, BLOCK_C), batch), SEG a multiple of BLOCK_T, K >= 2;
    x read once (and the K-1 rows before the segment), the last K-1 rows kept in registers."""
    b = tl.program_id(2)
    T0 = tl.program_id(0) * SEG
    offs_c, cmask, w, bias, x_off, xw = _stream_prologue(x_ptr, w_ptr, bias_ptr, b, T0, CH, s_x_b, s_x_t, s_x_c,
                                                         K, BLOCK_C, HAS_BIAS)
    y_off = b * s_y_b + offs_c * s_y_c
    cur = _stream_load_x(x_ptr, T0, T, x_off, s_x_t, cmask, BLOCK_T)
    for i in range(SEG // BLOCK_T):
        t0 = T0 + i * BLOCK_T
        nxt = _stream_load_x(x_ptr, t0 + BLOCK_T, T, x_off, s_x_t, cmask, BLOCK_T)
        xa = _stream_window(xw, cur, BLOCK_T)
        for r in tl.static_range(BLOCK_T):
            pre = _stream_pre(xa, r, w, bias, K, HAS_BIAS)
            if ACT:
                pre = pre * tl.sigmoid(pre)
            tl.store(y_ptr + y_off + (t0 + r) * s_y_t, pre.to(y_ptr.dtype.element_ty), mask=(t0 + r < T) & cmask)
        xw = ()
        for j in tl.static_range(K - 1):
            xw = xw + (xa[BLOCK_T + j],)
        cur = nxt

"""Triton kernels of the short causal depthwise conv fused with SiLU (`reference.py`).

Memory-bound: the forward reads x once (plus a K-1 row halo from cache) and writes y once,
with the bias and SiLU applied in registers, in the (batch, seqlen, channels) layout the
projections produce (no transposes). The backward is one kernel too: for dx at rows t it needs
dpre = dy * SiLU'(pre) at rows t .. t+K-1, which it recomputes from x (the extra reads hit the
cache), and it writes per-program partial sums of dweight and dbias that the launcher adds.
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

"""Triton kernels of Sparse Mamba's eigenbasis scan (the op and its contract: `op.py`; the math:
`reference.py`). Per batch row and block of channels, over time tiles of BLOCK_T tokens:

    forward     g_t = a_t g_{t-1} + v_t,   a_t = exp(delta_t lambda)   (complex, per state k)
                SC: v_t = delta_t u_t,      y_t = Re sum_k P_t[k] g_t[k] + D u_t
                SO: v_t = delta_t u_t P_t,  y_t = Re sum_k g_t[k]        + D u_t
    backward    G_t = dy_t conj(R_t) + conj(a_{t+1}) G_{t+1}   (R = P for SC, 1 for SO)
                Z_t = G_t conj(a_t g_{t-1})  = dL/d(delta_t lambda)  (PyTorch's complex-gradient
                convention: dL/dRe + i dL/dIm)

Complex numbers are (real, imag) pairs of real tensors; the arithmetic runs in DT (float64 by
default for smamba, `docs/smamba.md` "Precision"). Inside a tile the recurrence is a
`tl.associative_scan` of affine maps (a, v); across tiles the state is carried in registers, and
the training forward stores the state entering every tile, from which the backward recomputes
the tile (as `kernels/selective_scan/kernel.py`'s backward does).

The readout P_t = X_t W (W = `eigen_readout(lambda)`, an N x N complex matrix per channel) is
not in the kernels: the op computes it with two real GEMMs and the backward turns dP into dX
and dW with two more (docs/smamba.md "GPU path").
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _combine(ar1, ai1, vr1, vi1, ar2, ai2, vr2, vi2):
    """(a1, v1) then (a2, v2), complex: h -> a2 (a1 h + v1) + v2."""
    ar = ar2 * ar1 - ai2 * ai1
    ai = ar2 * ai1 + ai2 * ar1
    vr = ar2 * vr1 - ai2 * vi1 + vr2
    vi = ar2 * vi1 + ai2 * vr1 + vi2
    return ar, ai, vr, vi


@triton.jit
def _decay(dl, lr, li):
    """exp(delta * lambda) as (real, imag): dl (BLOCK_T, BLOCK_C); lr, li (BLOCK_C, BLOCK_N)."""
    mod = tl.exp(dl[:, :, None] * lr[None, :, :])
    ang = dl[:, :, None] * li[None, :, :]
    return mod * tl.cos(ang), mod * tl.sin(ang)


@triton.jit
def companion_scan_fwd_kernel(
    u_ptr, dl_ptr, lr_ptr, li_ptr, Pr_ptr, Pi_ptr, D_ptr, init_ptr,
    y_ptr, final_ptr, states_ptr,
    T, CH, N, ntiles,
    s_u_b, s_u_t, s_u_c,
    s_d_b, s_d_t, s_d_c,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
    CONTROLLABLE: tl.constexpr, HAS_D: tl.constexpr, HAS_INIT: tl.constexpr,
    STORE_STATES: tl.constexpr, DT: tl.constexpr,
):
    """Grid (cdiv(CH, BLOCK_C), batch). u, delta: (batch, T, CH), any strides; lr, li: (CH, N);
    Pr, Pi: (batch, T, CH, N) contiguous, DT; init, final: (batch, CH, N, 2) contiguous, DT;
    y: (batch, T, CH) contiguous; states: (batch, ntiles, 2, CH, N), DT (the state entering
    every tile)."""
    pid_c = tl.program_id(0)
    b = tl.program_id(1)
    offs_t = tl.arange(0, BLOCK_T)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_n = tl.arange(0, BLOCK_N)
    cmask = offs_c < CH
    nmask = offs_n < N
    cn_mask = cmask[:, None] & nmask[None, :]
    cn_offs = offs_c[:, None] * N + offs_n[None, :]
    lr = tl.load(lr_ptr + cn_offs, mask=cn_mask, other=0.0).to(DT)
    li = tl.load(li_ptr + cn_offs, mask=cn_mask, other=0.0).to(DT)
    if HAS_D:
        Dc = tl.load(D_ptr + offs_c, mask=cmask, other=0.0).to(DT)
    if HAS_INIT:
        sr = tl.load(init_ptr + (b * CH * N + cn_offs) * 2, mask=cn_mask, other=0.0).to(DT)
        si = tl.load(init_ptr + (b * CH * N + cn_offs) * 2 + 1, mask=cn_mask, other=0.0).to(DT)
    else:
        sr = tl.zeros((BLOCK_C, BLOCK_N), dtype=DT)
        si = tl.zeros((BLOCK_C, BLOCK_N), dtype=DT)
    is_last = (offs_t == BLOCK_T - 1)[:, None, None]
    nmask3 = nmask[None, None, :]
    for k in range(ntiles):
        t = k * BLOCK_T + offs_t
        tmask = t < T
        tc_mask = tmask[:, None] & cmask[None, :]
        m3 = tc_mask[:, :, None] & nmask3
        p_offs = ((b * T + t[:, None, None]) * CH + offs_c[None, :, None]) * N + offs_n[None, None, :]
        u = tl.load(u_ptr + b * s_u_b + t[:, None] * s_u_t + offs_c[None, :] * s_u_c, mask=tc_mask, other=0.0).to(DT)
        dl = tl.load(dl_ptr + b * s_d_b + t[:, None] * s_d_t + offs_c[None, :] * s_d_c, mask=tc_mask, other=0.0).to(DT)
        Pr = tl.load(Pr_ptr + p_offs, mask=m3, other=0.0).to(DT)
        Pi = tl.load(Pi_ptr + p_offs, mask=m3, other=0.0).to(DT)
        ar, ai = _decay(dl, lr, li)
        du = (dl * u)[:, :, None]
        if CONTROLLABLE:
            vr = tl.where(nmask3, du, 0.0)
            vi = tl.zeros_like(vr)
        else:
            vr = du * Pr
            vi = du * Pi
        acr, aci, vcr, vci = tl.associative_scan((ar, ai, vr, vi), 0, _combine)
        gr = vcr + acr * sr[None, :, :] - aci * si[None, :, :]
        gi = vci + acr * si[None, :, :] + aci * sr[None, :, :]
        if CONTROLLABLE:
            y = tl.sum(Pr * gr - Pi * gi, axis=2)
        else:
            y = tl.sum(tl.where(nmask3, gr, 0.0), axis=2)
        if HAS_D:
            y += Dc[None, :] * u
        tl.store(y_ptr + (b * T + t[:, None]) * CH + offs_c[None, :], y.to(y_ptr.dtype.element_ty), mask=tc_mask)
        if STORE_STATES:
            base = (b * ntiles + k) * 2 * CH * N
            tl.store(states_ptr + base + cn_offs, sr, mask=cn_mask)
            tl.store(states_ptr + base + CH * N + cn_offs, si, mask=cn_mask)
        # the tile's last row (padding rows past T have delta = 0: decay 1, no input)
        sr = tl.sum(tl.where(is_last, gr, 0.0), axis=0)
        si = tl.sum(tl.where(is_last, gi, 0.0), axis=0)
    tl.store(final_ptr + (b * CH * N + cn_offs) * 2, sr, mask=cn_mask)
    tl.store(final_ptr + (b * CH * N + cn_offs) * 2 + 1, si, mask=cn_mask)


@triton.jit
def companion_scan_bwd_kernel(
    u_ptr, dl_ptr, lr_ptr, li_ptr, Pr_ptr, Pi_ptr, D_ptr, states_ptr, dy_ptr, dfinal_ptr,
    du_ptr, ddl_ptr, dPr_ptr, dPi_ptr, dlam_part_ptr, dD_part_ptr, dinit_ptr,
    T, CH, N, ntiles,
    s_u_b, s_u_t, s_u_c,
    s_d_b, s_d_t, s_d_c,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
    CONTROLLABLE: tl.constexpr, HAS_D: tl.constexpr, HAS_DFINAL: tl.constexpr,
    STORE_DINIT: tl.constexpr, DT: tl.constexpr,
):
    """Grid (cdiv(CH, BLOCK_C), batch). dy: (batch, T, CH) contiguous; dfinal, dinit: (batch,
    CH, N, 2); du, ddl: (batch, T, CH) contiguous, DT; dPr, dPi: like Pr; dlam partial (batch, 2,
    CH, N); dD partial (batch, CH)."""
    pid_c = tl.program_id(0)
    b = tl.program_id(1)
    offs_t = tl.arange(0, BLOCK_T)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_n = tl.arange(0, BLOCK_N)
    cmask = offs_c < CH
    nmask = offs_n < N
    cn_mask = cmask[:, None] & nmask[None, :]
    cn_offs = offs_c[:, None] * N + offs_n[None, :]
    lr = tl.load(lr_ptr + cn_offs, mask=cn_mask, other=0.0).to(DT)
    li = tl.load(li_ptr + cn_offs, mask=cn_mask, other=0.0).to(DT)
    if HAS_D:
        Dc = tl.load(D_ptr + offs_c, mask=cmask, other=0.0).to(DT)
        dD = tl.zeros((BLOCK_C,), dtype=DT)
    if HAS_DFINAL:
        cr = tl.load(dfinal_ptr + (b * CH * N + cn_offs) * 2, mask=cn_mask, other=0.0).to(DT)
        ci = tl.load(dfinal_ptr + (b * CH * N + cn_offs) * 2 + 1, mask=cn_mask, other=0.0).to(DT)
    else:
        cr = tl.zeros((BLOCK_C, BLOCK_N), dtype=DT)
        ci = tl.zeros((BLOCK_C, BLOCK_N), dtype=DT)
    dlr = tl.zeros((BLOCK_C, BLOCK_N), dtype=DT)
    dli = tl.zeros((BLOCK_C, BLOCK_N), dtype=DT)
    is_first = (offs_t == 0)[:, None, None]
    nmask3 = nmask[None, None, :]
    for i in range(ntiles):
        k = ntiles - 1 - i
        t = k * BLOCK_T + offs_t
        tmask = t < T
        tc_mask = tmask[:, None] & cmask[None, :]
        m3 = tc_mask[:, :, None] & nmask3
        # the next token inside this tile (the last row reads none: its successor's decay is
        # applied to the carry by the tile that owns it)
        t1 = t + 1
        t1mask = (t1 < T) & (offs_t < BLOCK_T - 1)
        p_offs = ((b * T + t[:, None, None]) * CH + offs_c[None, :, None]) * N + offs_n[None, None, :]
        u = tl.load(u_ptr + b * s_u_b + t[:, None] * s_u_t + offs_c[None, :] * s_u_c, mask=tc_mask, other=0.0).to(DT)
        dl = tl.load(dl_ptr + b * s_d_b + t[:, None] * s_d_t + offs_c[None, :] * s_d_c, mask=tc_mask, other=0.0).to(DT)
        dl1 = tl.load(dl_ptr + b * s_d_b + t1[:, None] * s_d_t + offs_c[None, :] * s_d_c,
                      mask=t1mask[:, None] & cmask[None, :], other=0.0).to(DT)
        dy = tl.load(dy_ptr + (b * T + t[:, None]) * CH + offs_c[None, :], mask=tc_mask, other=0.0).to(DT)
        Pr = tl.load(Pr_ptr + p_offs, mask=m3, other=0.0).to(DT)
        Pi = tl.load(Pi_ptr + p_offs, mask=m3, other=0.0).to(DT)
        base = (b * ntiles + k) * 2 * CH * N
        sr = tl.load(states_ptr + base + cn_offs, mask=cn_mask, other=0.0)
        si = tl.load(states_ptr + base + CH * N + cn_offs, mask=cn_mask, other=0.0)

        # forward, recomputed: g_t from the state entering the tile
        ar, ai = _decay(dl, lr, li)
        du = (dl * u)[:, :, None]
        if CONTROLLABLE:
            vr = tl.where(nmask3, du, 0.0)
            vi = tl.zeros_like(vr)
        else:
            vr = du * Pr
            vi = du * Pi
        acr, aci, vcr, vci = tl.associative_scan((ar, ai, vr, vi), 0, _combine)
        gr = vcr + acr * sr[None, :, :] - aci * si[None, :, :]
        gi = vci + acr * si[None, :, :] + aci * sr[None, :, :]

        # backward: G_t = dy_t conj(R_t) + conj(a_{t+1}) G_{t+1}, the carry entering at the end
        a1r, a1i = _decay(dl1, lr, li)
        if CONTROLLABLE:
            br = dy[:, :, None] * Pr
            bi = -dy[:, :, None] * Pi
        else:
            br = tl.where(nmask3, dy[:, :, None], 0.0)
            bi = tl.zeros_like(br)
        alr, ali, bsr, bsi = tl.associative_scan((a1r, -a1i, br, bi), 0, _combine, reverse=True)
        Gr = bsr + alr * cr[None, :, :] - ali * ci[None, :, :]
        Gi = bsi + alr * ci[None, :, :] + ali * cr[None, :, :]

        # dL/d(delta u): sum_k Re(G conj(dv/d(delta u)))
        if CONTROLLABLE:
            gdu = tl.sum(tl.where(nmask3, Gr, 0.0), axis=2)
        else:
            gdu = tl.sum(Gr * Pr + Gi * Pi, axis=2)
        # Z = G conj(a_t g_{t-1}) = G conj(g_t - v_t)
        hr = gr - vr
        hi = gi - vi
        Zr = Gr * hr + Gi * hi
        Zi = Gi * hr - Gr * hi
        ddl = gdu * u + tl.sum(Zr * lr[None, :, :] + Zi * li[None, :, :], axis=2)
        dun = gdu * dl
        if HAS_D:
            dun += Dc[None, :] * dy
            dD += tl.sum(dy * u, axis=0)
        tl.store(du_ptr + (b * T + t[:, None]) * CH + offs_c[None, :], dun, mask=tc_mask)
        tl.store(ddl_ptr + (b * T + t[:, None]) * CH + offs_c[None, :], ddl, mask=tc_mask)
        dlr += tl.sum(Zr * dl[:, :, None], axis=0)
        dli += tl.sum(Zi * dl[:, :, None], axis=0)
        # dP: SC y = Re(P g) -> dy conj(g); SO v = delta u P -> delta u G
        if CONTROLLABLE:
            dPr = dy[:, :, None] * gr
            dPi = -dy[:, :, None] * gi
        else:
            dPr = du * Gr
            dPi = du * Gi
        tl.store(dPr_ptr + p_offs, dPr, mask=m3)
        tl.store(dPi_ptr + p_offs, dPi, mask=m3)
        # the carry into the previous tile: conj(a_first) G_first
        cr = tl.sum(tl.where(is_first, ar * Gr + ai * Gi, 0.0), axis=0)
        ci = tl.sum(tl.where(is_first, ar * Gi - ai * Gr, 0.0), axis=0)
    tl.store(dlam_part_ptr + b * 2 * CH * N + cn_offs, dlr, mask=cn_mask)
    tl.store(dlam_part_ptr + b * 2 * CH * N + CH * N + cn_offs, dli, mask=cn_mask)
    if HAS_D:
        tl.store(dD_part_ptr + b * CH + offs_c, dD, mask=cmask)
    if STORE_DINIT:
        tl.store(dinit_ptr + (b * CH * N + cn_offs) * 2, cr, mask=cn_mask)
        tl.store(dinit_ptr + (b * CH * N + cn_offs) * 2 + 1, ci, mask=cn_mask)

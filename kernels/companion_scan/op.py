"""Autograd op and public function of the Triton companion (Sparse Mamba) scan; kernels in
`kernel.py`, the contract of `reference.companion_scan_chunked`:

    companion_scan(u, delta, lam, X, D=None, form="controllable", initial_state=None, chunk_size=32)
        -> (y, final_state)

    u, delta: (batch, seqlen, channels)        lam: (channels, N) complex roots of p
    X: (batch, seqlen, N) real (C_t or B_t)     D: (channels,) or None
    initial_state: (batch, channels, N) complex (eigenbasis) or None
    -> y in u's dtype, final_state complex in the compute dtype

The compute dtype is the reference's: u's precision, at least fp32 (smamba passes fp64 u by
default: `smamba_scan_dtype`). The readout P_t = X_t W, W = eigen_readout(lam) (channels, N, N),
is two real GEMMs in the compute dtype before the forward kernel and again before the backward
kernel (recomputed, not saved: (batch, seqlen, channels, N) complex is the largest tensor of the
layer); dX and dW are two GEMMs each after it. What the backward keeps: u, delta, X, lam, W, D
and the state entering every time tile of BLOCK_T tokens.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._buffers import empty as _empty
from .kernel import companion_scan_bwd_kernel, companion_scan_fwd_kernel
from .reference import FORMS, eigen_readout

# Launch parameters (H200, fp64, N = 16: benchmarks/companion_scan.py; docs/benchmarks.md)
CONFIG = {
    "fwd": {"BLOCK_T": 8, "BLOCK_C": 4, "num_warps": 4},
    "bwd": {"BLOCK_T": 8, "BLOCK_C": 4, "num_warps": 4},
}

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (debugging)


def _tl_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _pow2(n: int) -> int:
    return max(2, triton.next_power_of_2(n))


def _readout(X: Tensor, Wr: Tensor, Wi: Tensor) -> tuple[Tensor, Tensor]:
    """P_t[c, k] = sum_i X_t[i] W[c, k, i] as (real, imag): (b, t, N) x (c, N, N) -> (b, t, c, N)."""
    b, t, n = X.shape
    c = Wr.shape[0]
    X2 = X.reshape(b * t, n)
    with torch.autocast(X.device.type, enabled=False):  # in the compute dtype, also under bf16 autocast
        Pr = (X2 @ Wr.reshape(c * n, n).T).view(b, t, c, n)
        Pi = (X2 @ Wi.reshape(c * n, n).T).view(b, t, c, n)
    return Pr, Pi


class CompanionScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, X, lam_r, lam_i, Wr, Wi, D, init, form):
        ctx.set_materialize_grads(False)  # an unused y or final state: no zero tensors
        b, t, ch = u.shape
        n = lam_r.shape[1]
        dt = torch.promote_types(u.dtype, torch.float32)
        cfg = CONFIG["fwd"]
        block_t, block_c = cfg["BLOCK_T"], cfg["BLOCK_C"]
        ntiles = triton.cdiv(t, block_t)
        lr, li = lam_r.to(dt).contiguous(), lam_i.to(dt).contiguous()
        Xd, Wrd, Wid = X.to(dt), Wr.to(dt), Wi.to(dt)
        Pr, Pi = _readout(Xd, Wrd, Wid)
        Dd = D.to(dt).contiguous() if D is not None else None
        initd = init.to(dt).contiguous() if init is not None else None
        y = _empty(b, t, ch, like=u)
        final = _empty(b, ch, n, 2, like=u, dtype=dt)
        need_grad = ctx.needs_input_grad is not None and any(ctx.needs_input_grad)
        states = _empty(b, ntiles, 2, ch, n, like=u, dtype=dt) if need_grad else final
        grid = (triton.cdiv(ch, block_c), b)
        companion_scan_fwd_kernel[grid](
            u, delta, lr, li, Pr, Pi, Dd if Dd is not None else lr, initd if initd is not None else final,
            y, final, states,
            t, ch, n, ntiles,
            *u.stride(), *delta.stride(),
            BLOCK_T=block_t, BLOCK_C=block_c, BLOCK_N=_pow2(n),
            CONTROLLABLE=form == "controllable", HAS_D=Dd is not None, HAS_INIT=initd is not None,
            STORE_STATES=need_grad, DT=_tl_dtype(dt), num_warps=cfg["num_warps"],
        )
        del Pr, Pi
        if need_grad:
            ctx.save_for_backward(u, delta, X, lr, li, Wrd, Wid, Dd, states)
            ctx.form, ctx.dtypes, ctx.has_init = form, (X.dtype, Wr.dtype, lam_r.dtype), init is not None
            ctx.init_dtype = init.dtype if init is not None else None
            ctx.D_dtype = D.dtype if D is not None else None
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        u, delta, X, lr, li, Wr, Wi, Dd, states = ctx.saved_tensors
        b, t, ch = u.shape
        n = lr.shape[1]
        dt = lr.dtype
        cfg = CONFIG["bwd"]
        block_t, block_c = cfg["BLOCK_T"], cfg["BLOCK_C"]
        assert block_t == CONFIG["fwd"]["BLOCK_T"], "the backward reads the forward's per-tile states"
        ntiles = states.shape[1]
        Xd = X.to(dt)
        Pr, Pi = _readout(Xd, Wr, Wi)
        dy = (dy if dy is not None else torch.zeros(b, t, ch, device=u.device, dtype=u.dtype)).contiguous()
        need_dinit = ctx.has_init and ctx.needs_input_grad[8]
        du = _empty(b, t, ch, like=u, dtype=dt)
        ddl = _empty(b, t, ch, like=u, dtype=dt)
        dPr, dPi = _empty(*Pr.shape, like=Pr), _empty(*Pi.shape, like=Pi)
        dlam = _empty(b, 2, ch, n, like=u, dtype=dt)
        dD = _empty(b, ch, like=u, dtype=dt) if Dd is not None else None
        dinit = _empty(b, ch, n, 2, like=u, dtype=dt) if need_dinit else None
        dfin = dfinal.to(dt).contiguous() if dfinal is not None else None
        grid = (triton.cdiv(ch, block_c), b)
        companion_scan_bwd_kernel[grid](
            u, delta, lr, li, Pr, Pi, Dd if Dd is not None else lr, states, dy,
            dfin if dfin is not None else states,
            du, ddl, dPr, dPi, dlam, dD if dD is not None else du, dinit if dinit is not None else du,
            t, ch, n, ntiles,
            *u.stride(), *delta.stride(),
            BLOCK_T=block_t, BLOCK_C=block_c, BLOCK_N=_pow2(n),
            CONTROLLABLE=ctx.form == "controllable", HAS_D=Dd is not None, HAS_DFINAL=dfin is not None,
            STORE_DINIT=need_dinit, DT=_tl_dtype(dt), num_warps=cfg["num_warps"],
        )
        del Pr, Pi
        X_dtype, W_dtype, lam_dtype = ctx.dtypes
        # P = X W^T per channel: dX = dP W (real part of dP conj(W)), dW = X^T dP
        dP2r, dP2i = dPr.view(b * t, ch * n), dPi.view(b * t, ch * n)
        X2 = Xd.reshape(b * t, n)
        with torch.autocast(u.device.type, enabled=False):
            dX = (dP2r @ Wr.reshape(ch * n, n) + dP2i @ Wi.reshape(ch * n, n)).view(b, t, n)
            dWr = (dP2r.T @ X2).view(ch, n, n)
            dWi = (dP2i.T @ X2).view(ch, n, n)
        dl = dlam.sum(0)
        return (
            du.to(u.dtype), ddl.to(delta.dtype), dX.to(X_dtype), dl[0].to(lam_dtype), dl[1].to(lam_dtype),
            dWr.to(W_dtype), dWi.to(W_dtype), dD.sum(0).to(ctx.D_dtype) if dD is not None else None,
            dinit.to(ctx.init_dtype) if need_dinit else None, None,
        )


def companion_scan(
    u: Tensor, delta: Tensor, lam: Tensor, X: Tensor, D: Tensor | None = None, form: str = "controllable",
    initial_state: Tensor | None = None, chunk_size: int = 32,
) -> tuple[Tensor, Tensor]:
    """Triton companion scan; shapes in the module docstring. chunk_size: accepted for the
    contract (the kernels' time tile is CONFIG's BLOCK_T)."""
    assert u.is_cuda or _INTERPRET, "the Triton companion scan needs CUDA tensors (kernels.companion_scan falls back to the reference)"
    assert form in FORMS, f"form must be one of {FORMS}, got {form!r}"
    b, t, ch = u.shape
    assert delta.shape == u.shape, f"delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}"
    assert lam.dim() == 2 and lam.shape[0] == ch and lam.is_complex(), (
        f"lam must be complex (channels, dstate) with channels = {ch}, got {tuple(lam.shape)} {lam.dtype}")
    n = lam.shape[1]
    assert X.shape == (b, t, n), f"X must be (batch, seqlen, dstate) = {(b, t, n)}, got {tuple(X.shape)}"
    assert D is None or D.shape == (ch,), f"D must be (channels,) = ({ch},), got {tuple(D.shape)}"
    del chunk_size
    dt = torch.promote_types(u.dtype, torch.float32)
    ctype = torch.promote_types(dt, torch.complex64)
    W = torch.view_as_real(eigen_readout(lam).to(ctype))  # (c, k, i, 2)
    lam2 = torch.view_as_real(lam.to(ctype))
    init = torch.view_as_real(initial_state.to(ctype)) if initial_state is not None else None
    y, final = CompanionScan.apply(
        u, delta, X, lam2[..., 0], lam2[..., 1], W[..., 0], W[..., 1], D, init, form
    )
    return y, torch.view_as_complex(final)

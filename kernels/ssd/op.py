"""Autograd op and public functions of the Triton SSD scan (kernels in `kernel.py`).

    ssd_scan(x, dt, A, B, C, D=None, initial_state=None, chunk_size=64) -> (y, final_state)
        the contract of `reference.ssd_chunked` (dt after softplus).
    ssd_scan_routed(x, dt_raw, A, B, C, D=None, dt_bias=None, slot_ids=None, slot_bias=None,
                    initial_state=None, chunk_size=64, softplus=True) -> (y, final_state)
        the fused HADES / Mamba2 entry: dt = softplus(dt_raw[..., slot_ids] + slot_bias + dt_bias)
        is formed inside the kernels (`routing.routed_dt` is its plain-torch definition).

Shapes:
    x:  (batch, seqlen, nheads, headdim)          B, C: (batch, seqlen, ngroups, dstate)
    dt: (batch, seqlen, nheads)                     A: (nheads,) negative; D: (nheads,) or None
    dt_raw: (batch, seqlen, M) with slot_ids (batch, seqlen, nheads) int in [0, M), or
            (batch, seqlen, nheads) without slot_ids
    slot_bias: (batch, seqlen, nheads) or None      dt_bias: (nheads,), () or None
    initial_state: (batch, nheads, headdim, dstate) or None
    -> y: (batch, seqlen, nheads, headdim) in x's dtype; final_state (batch, nheads, headdim, dstate) fp32

B and C are cast to x's dtype for the matrix products; accumulation is fp32 throughout.
"""

from __future__ import annotations

import os

import torch
import triton
from torch import Tensor

from .._buffers import empty as _empty
from ..slab import into as _into
from .kernel import ssd_bwd_chunk_kernel, ssd_bwd_dstate_kernel, ssd_dt_kernel, ssd_fwd_kernel

# Launch parameters per kernel (tuned on an H100 by benchmarks/ssd.py; see docs/benchmarks.md).
# BLOCK_P splits the head dimension of the sequential kernels across programs (more parallelism,
# the C.B product recomputed per block).
CONFIG = {
    "fwd": {"BLOCK_P": 32, "num_warps": 4, "num_stages": 2},
    "states": {"BLOCK_P": 32, "num_warps": 4, "num_stages": 2},
    "dstate": {"BLOCK_P": 64, "num_warps": 8, "num_stages": 2},
    # the gradient kernel: 8 warps (no register spills, sm_90a), or num_warps_many (4, two
    # programs per SM) from many_programs programs per SM on: measured on an H200 with bf16 states,
    # 8192 programs (batch 8 x 2048, H = 32) 12% faster at 4 warps, 4096 (H = 16) 2-8% faster at 8
    # (`benchmarks/ssd.py --chunk-warps 4 8`, docs/benchmarks.md section 9)
    "chunk": {"num_warps": 8, "num_warps_many": 4, "many_programs": 48, "num_stages": 1},
}
# The forward stores the state entering every chunk when a gradient will be needed, for the
# backward to read (in x's dtype: dstate / chunk_size times x's size, twice x at N = 128,
# L = 64; +3 GiB for HADES and +7.5 GiB for Mamba2 at 48 layers, batch 8 x 2048), instead of
# the backward recomputing them with a states-only pass of the forward kernel. False:
# recompute (the activation memory of a scan back to x, dt, B, C).
SAVE_STATES = True


_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (debugging)




def _n_sm(x: Tensor) -> int:
    return torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 132


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


class _DtSource:
    """How the kernels read Δ: tensors (or a dummy) plus strides and flags."""

    def __init__(self, x: Tensor, dt: Tensor, slot_ids, slot_bias, dt_bias, softplus: bool):
        b, t, h, _ = x.shape
        self.routed = slot_ids is not None
        if self.routed:
            assert slot_ids.shape == (b, t, h), f"slot_ids must be (batch, seqlen, nheads) = {(b, t, h)}, got {tuple(slot_ids.shape)}"
            assert dt.shape[:2] == (b, t) and dt.dim() == 3, f"dt_raw must be (batch, seqlen, M), got {tuple(dt.shape)}"
        else:
            assert dt.shape == (b, t, h), f"dt must be (batch, seqlen, nheads) = {(b, t, h)}, got {tuple(dt.shape)}"
        if slot_bias is not None:
            assert slot_bias.shape == (b, t, h), f"slot_bias must be (batch, seqlen, nheads) = {(b, t, h)}, got {tuple(slot_bias.shape)}"
        self.dtb = None
        if dt_bias is not None:
            assert dt_bias.numel() in (1, h), f"dt_bias must have 1 or nheads={h} elements, got {tuple(dt_bias.shape)}"
            self.dtb = dt_bias.reshape(-1).expand(h).float().contiguous()
        self.dt, self.ids, self.bias = dt, slot_ids, slot_bias
        self.softplus = softplus

    def args(self, dummy: Tensor) -> list:
        ids = self.ids if self.routed else dummy
        bias = self.bias if self.bias is not None else dummy
        dtb = self.dtb if self.dtb is not None else dummy
        s_id = self.ids.stride() if self.routed else (0, 0, 0)
        s_bi = self.bias.stride() if self.bias is not None else (0, 0, 0)
        return [self.dt, ids, bias, dtb], [*self.dt.stride(), *s_id, *s_bi]

    def flags(self) -> dict:
        return dict(
            ROUTED=self.routed, HAS_BIAS=self.bias is not None, HAS_DTB=self.dtb is not None,
            SOFTPLUS=self.softplus,
        )

    @property
    def is_plain(self) -> bool:
        return not (self.routed or self.softplus or self.bias is not None or self.dtb is not None)

    def materialize(self, x: Tensor) -> _DtSource:
        """A plain source holding dt (fp32, (batch, seqlen, nheads)) computed by one small kernel."""
        if self.is_plain:
            return self
        b, t, h, _ = x.shape
        out = torch.empty(b, t, h, device=x.device, dtype=torch.float32)
        (dt_t, ids_t, bias_t, dtb_t), strides = self.args(x)
        block_h = triton.next_power_of_2(h)
        block_t = max(1, 1024 // block_h)
        ssd_dt_kernel[(triton.cdiv(t, block_t), b)](
            dt_t, ids_t, bias_t, dtb_t, out, t, h, *strides,
            BLOCK_T=block_t, BLOCK_H=block_h, **self.flags(),
        )
        return _DtSource(x, out, None, None, None, False)


def _dot_prec(x: Tensor) -> str:
    # fp32 inputs: three tf32 products (hi*hi + hi*lo + lo*hi), fp32-accurate; plain tf32 misses
    # the 1e-3 bound on y (1.5e-3 measured) and full-fp32 FMA products take minutes to compile
    return "tf32x3" if x.dtype == torch.float32 else "tf32"


def _forward(x, src: _DtSource, A, B, C, D, init, chunk_size, compute_y=True, store_states=False):
    """src must be plain (materialized): the sequential kernels read dt, they do not gather."""
    b, t, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    nchunks = triton.cdiv(t, chunk_size)
    y = _empty(*x.shape, like=x) if compute_y else None
    final = _empty(b, h, p, n, like=x, dtype=torch.float32)
    # the states in x's dtype: the gradient kernel's products read them in it (its end term too)
    states = _empty(b, nchunks, h, p, n, like=x) if store_states else None
    cfg = CONFIG["fwd" if compute_y else "states"]
    block_p = min(cfg["BLOCK_P"], _pow2(p))
    (dt_t, ids_t, bias_t, dtb_t), dt_strides = src.args(x)
    grid = (triton.cdiv(p, block_p), b * h)
    ssd_fwd_kernel[grid](
        x, dt_t, ids_t, bias_t, dtb_t, A, B, C, D if D is not None else A,
        init if init is not None else final,
        y if y is not None else x, final, states if states is not None else final,
        t, h, p, n, h // g, nchunks,
        *x.stride(), *dt_strides, *B.stride(), *C.stride(),
        *(y.stride() if y is not None else x.stride()),
        L=chunk_size, BLOCK_P=block_p, BLOCK_N=_pow2(n), **src.flags(),
        HAS_D=D is not None, HAS_INIT=init is not None,
        COMPUTE_Y=compute_y, STORE_FINAL=True, STORE_STATES=store_states, DOT_PREC=_dot_prec(x),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return y, final, states


def _backward(x, src: _DtSource, plain: _DtSource, A, B, C, D, init, chunk_size, dy, dfinal, need_dinit, states=None,
              dx_into=None):
    """src: Δ's source (the chunk kernel also needs the pre-softplus value); plain: dt itself;
    states: the forward's stored entering states, or None (recomputed here); dx_into: the slab
    part dx is written into, or None."""
    b, t, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    nchunks = triton.cdiv(t, chunk_size)
    if states is None:
        _, _, states = _forward(x, plain, A, B, C, D, init, chunk_size, compute_y=False, store_states=True)
    (dt_t, ids_t, bias_t, dtb_t), dt_strides = plain.args(x)
    flags = plain.flags()
    dy = dy if dy is not None else torch.zeros_like(x)

    dstates = _empty(*states.shape, like=states)
    dinit = _empty(b, h, p, n, like=x, dtype=torch.float32) if need_dinit else None
    cfg = CONFIG["dstate"]
    block_p = min(cfg["BLOCK_P"], _pow2(p))
    ssd_bwd_dstate_kernel[(triton.cdiv(p, block_p), b * h)](
        dy, dt_t, ids_t, bias_t, dtb_t, A, C,
        dfinal if dfinal is not None else dstates, dstates, dinit if dinit is not None else dstates,
        t, h, p, n, h // g, nchunks,
        *dy.stride(), *dt_strides, *C.stride(),
        L=chunk_size, BLOCK_P=block_p, BLOCK_N=_pow2(n), **flags,
        HAS_DFINAL=dfinal is not None, STORE_DINIT=need_dinit, DOT_PREC=_dot_prec(x),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )

    dx = _into(dx_into, x.shape, like=x)
    dpre = _empty(b, t, h, like=x, dtype=torch.float32)
    dB = torch.zeros(b, t, g, n, device=x.device, dtype=torch.float32)
    dC = torch.zeros_like(dB)
    dA_part = _empty(h, b * nchunks, like=x, dtype=torch.float32)
    dD_part = _empty(h, b * nchunks, like=x, dtype=torch.float32) if D is not None else dA_part
    (dt_t, ids_t, bias_t, dtb_t), dt_strides = src.args(x)
    cfg = CONFIG["chunk"]
    warps = cfg["num_warps"]
    if "num_warps_many" in cfg and b * nchunks * h >= cfg["many_programs"] * _n_sm(x):
        warps = cfg["num_warps_many"]
    ssd_bwd_chunk_kernel[(b * nchunks, h)](
        x, dt_t, ids_t, bias_t, dtb_t, A, B, C, D if D is not None else A,
        dy, states, dstates,
        dx, dpre, dB, dC, dA_part, dD_part,
        t, h, p, n, h // g, nchunks, g,
        *x.stride(), *dt_strides, *B.stride(), *C.stride(), *dy.stride(), *dx.stride(),
        L=chunk_size, BLOCK_P=_pow2(p), BLOCK_N=_pow2(n), **src.flags(), HAS_D=D is not None,
        DOT_PREC=_dot_prec(x), num_warps=warps, num_stages=cfg["num_stages"],
    )
    dA = dA_part.sum(1)
    dD = dD_part.sum(1) if D is not None else None
    return dx, dpre, dA, dB, dC, dD, dinit


class SSDScan(torch.autograd.Function):
    """y, final_state = SSD scan; Δ read through `_DtSource` (plain dt or routed dt_raw)."""

    @staticmethod
    def forward(ctx, x, dt, slot_ids, slot_bias, dt_bias, A, B, C, D, initial_state, chunk_size, softplus, save,
                grad_into):
        src = _DtSource(x, dt, slot_ids, slot_bias, dt_bias, softplus)
        A32 = A.float().contiguous()
        D32 = D.float().contiguous() if D is not None else None
        Bx, Cx = B.to(x.dtype), C.to(x.dtype)
        init = initial_state.float().contiguous() if initial_state is not None else None
        plain = src.materialize(x)
        y, final, states = _forward(x, plain, A32, Bx, Cx, D32, init, chunk_size, store_states=save)
        ctx.save_for_backward(x, dt, slot_ids, slot_bias, dt_bias, A32, Bx, Cx, D32, init, plain.dt, states)
        ctx.meta = (chunk_size, softplus, B.dtype, C.dtype, A.dtype, None if D is None else D.dtype)
        ctx.init_dtype = None if initial_state is None else initial_state.dtype
        ctx.grad_into = grad_into or (None, None, None)
        ctx.set_materialize_grads(False)
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        x, dt, slot_ids, slot_bias, dt_bias, A32, Bx, Cx, D32, init, dt_plain, states = ctx.saved_tensors
        chunk_size, softplus, B_dtype, C_dtype, A_dtype, D_dtype = ctx.meta
        src = _DtSource(x, dt, slot_ids, slot_bias, dt_bias, softplus)
        plain = _DtSource(x, dt_plain, None, None, None, False)
        dfinal = dfinal.float().contiguous() if dfinal is not None else None
        x_into, B_into, C_into = ctx.grad_into
        dx, dpre, dA, dB, dC, dD, dinit = _backward(
            x, src, plain, A32, Bx, Cx, D32, init, chunk_size, dy, dfinal, need_dinit=init is not None, states=states,
            dx_into=x_into,
        )
        # dB, dC (fp32 sums) cast into their slab parts, or to fresh tensors
        dB = _into(B_into, dB.shape, like=Bx.new_empty(0, dtype=B_dtype)).copy_(dB) if B_into else dB.to(B_dtype)
        dC = _into(C_into, dC.shape, like=Cx.new_empty(0, dtype=C_dtype)).copy_(dC) if C_into else dC.to(C_dtype)
        if slot_ids is not None:  # scatter the slot gradients back onto the M filter channels
            ddt = torch.zeros(dt.shape, device=dt.device, dtype=torch.float32)
            ddt.scatter_add_(2, slot_ids.long(), dpre)
        else:
            ddt = dpre
        dbias = dpre.to(slot_bias.dtype) if slot_bias is not None else None
        ddt_bias = dpre.sum((0, 1)).reshape(-1) if dt_bias is not None else None
        if ddt_bias is not None:
            ddt_bias = (ddt_bias.sum() if dt_bias.numel() == 1 else ddt_bias).reshape(dt_bias.shape).to(dt_bias.dtype)
        return (
            dx, ddt.to(dt.dtype), None, dbias, ddt_bias, dA.to(A_dtype), dB, dC,
            dD.to(D_dtype) if dD is not None else None,
            dinit.to(ctx.init_dtype) if dinit is not None else None, None, None, None, None,
        )


def _save_states(*tensors) -> bool:
    """Whether the forward stores its chunk states for the backward (SAVE_STATES): only when a
    gradient will be taken (inside Function.forward, needs_input_grad is also set under
    torch.no_grad)."""
    return SAVE_STATES and torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _check(x: Tensor, A: Tensor, B: Tensor, C: Tensor, D, chunk_size: int) -> None:
    b, t, h, _ = x.shape
    assert x.is_cuda or _INTERPRET, "the Triton SSD scan needs CUDA tensors (kernels.ssd.ssd_scan falls back to the reference)"
    assert A.shape == (h,), f"A must be (nheads,) = ({h},), got {tuple(A.shape)}"
    assert B.shape == C.shape and B.dim() == 4 and B.shape[:2] == (b, t), (
        f"B, C must be (batch, seqlen, ngroups, dstate) with batch, seqlen = {(b, t)}; got B {tuple(B.shape)}, C {tuple(C.shape)}"
    )
    assert h % B.shape[2] == 0, f"nheads {h} must be a multiple of ngroups {B.shape[2]}"
    assert D is None or D.shape == (h,), f"D must be (nheads,) = ({h},), got {tuple(D.shape)}"
    assert chunk_size >= 16 and chunk_size & (chunk_size - 1) == 0, f"chunk_size must be a power of 2 >= 16, got {chunk_size}"


def ssd_scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
    initial_state: Tensor | None = None, chunk_size: int = 64, grad_into=None,
) -> tuple[Tensor, Tensor]:
    """Triton SSD scan with dt after softplus; same contract as `reference.ssd_chunked`.

    x (batch, seqlen, nheads, headdim), dt (batch, seqlen, nheads), A (nheads,),
    B/C (batch, seqlen, ngroups, dstate), D (nheads,) or None,
    initial_state (batch, nheads, headdim, dstate) or None
    -> y like x, final_state (batch, nheads, headdim, dstate) fp32.
    grad_into: (x, B, C) `kernels.slab.GradSlab` parts (or None each) that the gradients of x,
    B, C are written into, x, B, C being pieces of that slab's split (viewed as heads, groups)."""
    _check(x, A, B, C, D, chunk_size)
    return SSDScan.apply(x, dt, None, None, None, A, B, C, D, initial_state, chunk_size, False,
                         _save_states(x, dt, A, B, C, D, initial_state), grad_into)


def ssd_scan_routed(
    x: Tensor, dt_raw: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
    dt_bias: Tensor | None = None, slot_ids: Tensor | None = None, slot_bias: Tensor | None = None,
    initial_state: Tensor | None = None, chunk_size: int = 64, softplus: bool = True, grad_into=None,
) -> tuple[Tensor, Tensor]:
    """Fused HADES / Mamba2 scan: Δ = softplus(dt_raw[b, t, slot_ids[b, t, h]] + slot_bias + dt_bias)
    formed inside the kernels (plain-torch definition: `kernels.ssd.routing.routed_dt`).

    dt_raw (batch, seqlen, M) with slot_ids (batch, seqlen, nheads), or (batch, seqlen, nheads)
    without; slot_bias (batch, seqlen, nheads) or None; dt_bias (nheads,), () or None.
    Other shapes, outputs and grad_into: `ssd_scan`. Gradients flow to dt_raw, slot_bias and
    dt_bias (not to the integer slot_ids)."""
    _check(x, A, B, C, D, chunk_size)
    return SSDScan.apply(x, dt_raw, slot_ids, slot_bias, dt_bias, A, B, C, D, initial_state, chunk_size, softplus,
                         _save_states(x, dt_raw, slot_bias, dt_bias, A, B, C, D, initial_state), grad_into)

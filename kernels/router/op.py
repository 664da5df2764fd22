"""Autograd op of `kernels.router.in_router_proj` (kernels in `kernel.py`).

    in_router_proj(u, w_in, w_r, dtype) -> (z, v)

u (..., D) fp32 (the block norm's output), w_in (F, D), w_r (R, D) -> z = u W_in^T in `dtype`
(cuBLAS on u and W_in cast to `dtype`, as nn.Linear under autocast), v = u W_r^T fp32 (Triton).
Backward: dW_in = dz^T u_cast (cuBLAS, like autocast's linear), du = dz W_in (cuBLAS) + dv W_r in
one Triton kernel (fp32 out), dW_r = dv^T u (Triton, split over rows). Same function and
gradients as `reference.in_router_proj_ref`, up to fp32 rounding.
"""

from __future__ import annotations

import os

import torch
import triton
from torch import Tensor

from .._buffers import empty as _empty
from .kernel import (
    router_bwd_du_kernel,
    router_bwd_du_rows_kernel,
    router_bwd_dw_kernel,
    router_fwd_kernel,
)

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# tiles (rows, columns) per program and warps; SPLITS: row ranges of dW_r's partial sums
# du_layout "tile": router_bwd_du_kernel at "du"; "rows": router_bwd_du_rows_kernel at "du_rows"
# (rows, columns per step, warps, pipeline stages). `benchmarks/router.py --sweep-du` on an H200
# (docs/benchmarks.md section 10), u's gradient 16384 x 1024: tile 0.0712 ms (3.0x its floor),
# rows 32 x 64 at 4 stages 0.0356 (1.5x), 64 x 128 at 3 stages 0.0653
CONFIG = {"fwd": (64, 64, 4), "du": (64, 128, 4), "dw": (64, 128, 4), "SPLITS": 32,
          "du_layout": "rows", "du_rows": (32, 64, 4, 4)}


def _prec() -> str:
    return "ieee" if _INTERPRET else "tf32x3"


def _block_r(r: int) -> int:
    return max(16, triton.next_power_of_2(r))


def _router_fwd(u2: Tensor, w_r: Tensor, low: torch.dtype | None = None) -> tuple[Tensor, Tensor | None]:
    """v = u2 w_r^T fp32, and u2 cast to `low` (None: not) from the same reads of u2."""
    m, k = u2.shape
    r = w_r.shape[0]
    v = _empty(m, r, like=u2, dtype=torch.float32)
    uc = _empty(m, k, like=u2, dtype=low) if low is not None else None
    bm, bk, nw = CONFIG["fwd"]
    router_fwd_kernel[(triton.cdiv(m, bm),)](
        u2, w_r, v, m, k, r, *u2.stride(), *w_r.stride(), *v.stride(),
        BLOCK_M=bm, BLOCK_K=bk, BLOCK_R=_block_r(r), PREC=_prec(), num_warps=nw,
        **({} if uc is None else dict(low_ptr=uc, s_lm=uc.stride(0), STORE_LOW=True)),
    )
    return v, uc


def _router_du(dz: Tensor, dv: Tensor, w_r: Tensor) -> Tensor:
    m, k = dz.shape
    r = w_r.shape[0]
    du = _empty(m, k, like=dz, dtype=torch.float32)
    args = (dz, dv, w_r, du, m, k, r, *dz.stride(), *dv.stride(), *w_r.stride(), *du.stride())
    if CONFIG.get("du_layout", "tile") == "rows":
        bm, bk, nw, stages = CONFIG["du_rows"]
        router_bwd_du_rows_kernel[(triton.cdiv(m, bm),)](
            *args, BLOCK_M=bm, BLOCK_K=bk, BLOCK_R=_block_r(r), PREC=_prec(), STAGES=stages, num_warps=nw,
        )
        return du
    bm, bk, nw = CONFIG["du"]
    router_bwd_du_kernel[(triton.cdiv(m, bm), triton.cdiv(k, bk))](
        *args, BLOCK_M=bm, BLOCK_K=bk, BLOCK_R=_block_r(r), PREC=_prec(), num_warps=nw,
    )
    return du


def _router_dw(dv: Tensor, u2: Tensor) -> Tensor:
    m, k = u2.shape
    r = dv.shape[1]
    bm, bk, nw = CONFIG["dw"]
    splits = max(1, min(CONFIG["SPLITS"], triton.cdiv(m, bm)))
    rows = triton.cdiv(triton.cdiv(m, splits), bm) * bm
    splits = triton.cdiv(m, rows)
    part = _empty(splits, r, k, like=u2, dtype=torch.float32)
    router_bwd_dw_kernel[(triton.cdiv(k, bk), splits)](
        dv, u2, part, m, k, r, rows, *dv.stride(), *u2.stride(), *part.stride(),
        BLOCK_M=bm, BLOCK_K=bk, BLOCK_R=_block_r(r), PREC=_prec(), num_warps=nw,
    )
    return part.sum(0)


class InRouterProj(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, w_in, w_r, dtype):
        shape = u.shape
        u2 = u.reshape(-1, shape[-1])
        with torch.autocast(u.device.type, enabled=False):
            # the router's kernel also writes u in `dtype` for the in-projection (one pass over u)
            v, uc = _router_fwd(u2, w_r, low=dtype if dtype != u2.dtype else None)
            uc = u2 if uc is None else uc
            wc = w_in.to(dtype)
            z = uc @ wc.t()
        ctx.save_for_backward(u2, uc, wc, w_r)
        ctx.meta = (shape, w_in.dtype, w_r.dtype)
        ctx.set_materialize_grads(False)
        return z.reshape(*shape[:-1], -1), v.reshape(*shape[:-1], -1)

    @staticmethod
    def backward(ctx, dz, dv):
        u2, uc, wc, w_r = ctx.saved_tensors
        shape, w_in_dtype, w_r_dtype = ctx.meta
        m, k = u2.shape
        with torch.autocast(u2.device.type, enabled=False):
            dz2 = dz.reshape(m, -1).to(uc.dtype) if dz is not None else torch.zeros(m, wc.shape[0], device=u2.device, dtype=uc.dtype)
            dv2 = dv.reshape(m, -1).float() if dv is not None else torch.zeros(m, w_r.shape[0], device=u2.device)
            dw_in = (dz2.t() @ uc).to(w_in_dtype)
            du = _router_du(dz2 @ wc, dv2, w_r)
            dw_r = _router_dw(dv2, u2).to(w_r_dtype)
        return du.reshape(shape).to(u2.dtype), dw_in, dw_r, None


def in_router_proj(u: Tensor, w_in: Tensor, w_r: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """z = u W_in^T in `dtype`, v = u W_r^T fp32 (see the module docstring).
    u (..., D) fp32 on CUDA, w_in (F, D), w_r (R, D) -> z (..., F), v (..., R)."""
    assert u.dtype == torch.float32, f"in_router_proj's Triton op takes fp32 u, got {u.dtype}"
    assert w_in.shape[1] == u.shape[-1] and w_r.shape[1] == u.shape[-1], (
        f"w_in {tuple(w_in.shape)} and w_r {tuple(w_r.shape)} must have u's last dim {u.shape[-1]} columns")
    return InRouterProj.apply(u, w_in, w_r, dtype)

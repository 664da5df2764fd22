"""HADES's input projections, fused with the router's fp32 product (docs/paper.md "The HADES mixer", steps 1 and 4).

    from kernels.router import in_router_proj
    zxbcdt, v = in_router_proj(u, W_in, W_r, dtype)   # u (..., D) fp32; W_in (F, D); W_r (R, D)

zxbcdt = in_proj(u) in `dtype` (bf16 under autocast: u and W_in cast, fp32 accumulation), and
v = W_r u in fp32 (the router's product: its prefix centring cancels, so it is not rounded to
bf16; hades/models/mixers/hades.py). The backward sums u's two gradients in one kernel:
du = (dzxbcdt W_in) + dv W_r, in fp32, instead of a cast, a separate fp32 product and an add.
Triton on CUDA (`op.py`), the plain-torch composition (`reference.py`) elsewhere; same function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._triton import triton_op
from .reference import in_router_proj_ref


def in_router_proj(u: Tensor, w_in: Tensor, w_r: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(F.linear(u.to(dtype), w_in.to(dtype)), F.linear(u.float(), w_r.float())); Triton for CUDA fp32 u."""
    if u.is_cuda and u.dtype == torch.float32:
        op = triton_op(__name__, "in_router_proj")
        if op is not None:
            return op(u, w_in, w_r, dtype)
    return in_router_proj_ref(u, w_in, w_r, dtype)


__all__ = ["in_router_proj", "in_router_proj_ref"]

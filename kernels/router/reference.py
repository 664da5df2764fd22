"""Plain-torch definition of `kernels.router.in_router_proj` (the function the Triton op computes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def in_router_proj_ref(u: Tensor, w_in: Tensor, w_r: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """u (..., D), w_in (F, D), w_r (R, D) -> (u W_in^T in `dtype`, u W_r^T in fp32 or wider).

    Autocast off inside: `dtype` says what the in_proj product runs in (bf16 under bf16 autocast,
    as nn.Linear would), the router's product is fp32 (fp64 for fp64 u)."""
    ct = torch.promote_types(u.dtype, torch.float32)
    with torch.autocast(u.device.type, enabled=False):
        z = F.linear(u.to(dtype), w_in.to(dtype))
        v = F.linear(u.to(ct), w_r.to(ct))
    return z, v

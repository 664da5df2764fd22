"""Plain-PyTorch reference of the RMS norms of the language models (`hades.models.layers`).

    rms_norm:        out = x / sqrt(mean(x^2) + eps) * weight                      (over the last dim)
    gated_rms_norm:  h = y * silu(z);  out = h / sqrt(mean_group(h^2) + eps) * weight
                     (Mamba2's gated norm with norm_before_gate=False, the mean taken over each
                     group of `group_size` consecutive channels)

Exactly the math of `RMSNorm.forward` and `GatedRMSNorm.forward`: statistics in fp32 for
half-precision inputs (fp64 stays fp64), the result cast back to the dtype of x (of y).

Shapes: x, y, z (..., dim); weight (dim,) -> out (..., dim) in x's (y's) dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rms_norm_ref(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    """x (..., dim), weight (dim,) -> (..., dim) in x's dtype."""
    ct = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(ct)
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (out * weight.to(ct)).to(x.dtype)


def gated_rms_norm_ref(y: Tensor, z: Tensor, weight: Tensor, eps: float = 1e-5, group_size: int | None = None) -> Tensor:
    """y, z (..., dim), weight (dim,), group_size dividing dim (None = dim) -> (..., dim) in y's dtype."""
    dim = y.shape[-1]
    group_size = group_size or dim
    assert dim % group_size == 0, f"group_size {group_size} must divide dim {dim}"
    ct = torch.promote_types(y.dtype, torch.float32)
    h = y.to(ct) * F.silu(z.to(ct))
    g = h.unflatten(-1, (-1, group_size))
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
    return (g.flatten(-2) * weight.to(ct)).to(y.dtype)

"""Plain-torch definition of Mamba's output gate (`kernels.gate`): y * silu(z), fp32 arithmetic."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def silu_gate_ref(y: Tensor, z: Tensor) -> Tensor:
    """y * silu(z) in fp32 (>= fp32), returned in y's dtype."""
    ct = torch.promote_types(torch.promote_types(y.dtype, z.dtype), torch.float32)
    return (y.to(ct) * F.silu(z.to(ct))).to(y.dtype)

"""HADES's diversity loss in plain torch (docs/paper.md "The HADES mixer", step 9): the definition the Triton
kernels are tested against, and the path on CPU.

    ŷ_i = y_i / max(||y_i||, 1e-12)      (F.normalize over the head dimension P)
    L   = mean over (rows, i, j) of (<ŷ_i, ŷ_j> - δ_ij)^2
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def diversity_loss_ref(slot_outputs: Tensor) -> Tensor:
    """slot_outputs: (..., H, P) -> scalar, mean of (<ŷ_i, ŷ_j> - δ_ij)^2 over all leading dims
    and i, j; fp32 (fp64 for fp64 input)."""
    ct = torch.promote_types(slot_outputs.dtype, torch.float32)
    y = F.normalize(slot_outputs.to(ct), p=2, dim=-1)
    gram = y @ y.transpose(-1, -2)  # (..., H, H)
    eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    return (gram - eye).pow(2).mean()

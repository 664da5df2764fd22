"""HADES's diversity loss (docs/paper.md "The HADES mixer", step 9), fused.

    from kernels.diversity import diversity_loss
    loss = diversity_loss(slot_outputs)     # (..., H, P) -> scalar fp32

Triton on CUDA for fp32/bf16/fp16 (`op.py`: one read of the slot outputs forward, one read and
one write backward, instead of PyTorch's normalise / Gram / loss chain over fp32 copies), the
plain-torch reference (`reference.py`) elsewhere.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._triton import triton_op
from .reference import diversity_loss_ref


def diversity_loss(slot_outputs: Tensor, grad_to=None) -> Tensor:
    """Mean of (<ŷ_i, ŷ_j> - δ_ij)^2 over rows and slot pairs; Triton for CUDA inputs. grad_to:
    a `kernels.norm.grad_holder` of the norm that made slot_outputs (Triton only): the backward
    leaves the slots' gradient there for that norm's backward kernel to add, and returns none."""
    if slot_outputs.is_cuda and slot_outputs.dtype in (torch.float32, torch.bfloat16, torch.float16):
        op = triton_op(__name__, "diversity_loss")
        if op is not None:
            return op(slot_outputs, grad_to=grad_to)
    assert grad_to is None, "grad_to is for the Triton diversity loss only"
    return diversity_loss_ref(slot_outputs)


__all__ = ["diversity_loss", "diversity_loss_ref"]

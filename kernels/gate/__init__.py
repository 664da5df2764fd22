"""Mamba's output gate y * silu(z), fused: one kernel forward, one backward.

    from kernels.gate import silu_gate
    out = silu_gate(y, z)                 # y, z (..., dim) -> (..., dim) in y's dtype

Triton on CUDA for fp32 / bf16 / fp16 tensors (`op.py`), plain torch elsewhere (`silu_gate_ref`
in `reference.py`, fp32 arithmetic as the kernels). In eager torch the gate is four elementwise
kernels forward and backward over (batch, seqlen, d_inner) (silu, the product, their two
backwards), with their intermediates written and read; the fused op reads y and z once each
way. dz_into: a
`kernels.slab.GradSlab` part that z's gradient is written into (z sliced out of the
in-projection, whose split then needs no concatenation).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._triton import triton_op
from .reference import silu_gate_ref

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def silu_gate(y: Tensor, z: Tensor, dz_into=None) -> Tensor:
    """y * silu(z) for y, z (..., dim) of one shape, any strides; in y's dtype, fp32 arithmetic.
    dz_into: a `kernels.slab.GradSlab` part for z's gradient (the Triton path writes it there;
    the reference ignores it, and the slab's split copies the gradient in)."""
    assert y.shape == z.shape, f"silu_gate: y {tuple(y.shape)} and z {tuple(z.shape)} must have one shape"
    if y.is_cuda and z.is_cuda and y.dtype in _TRITON_DTYPES and z.dtype in _TRITON_DTYPES:
        op = triton_op(__name__)
        if op is not None:
            return op.silu_gate(y, z, dz_into=dz_into)
    return silu_gate_ref(y, z)


__all__ = ["silu_gate", "silu_gate_ref"]

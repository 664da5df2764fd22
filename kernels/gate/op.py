"""Autograd op of `kernels.gate.silu_gate` (kernels in `kernel.py`).

    silu_gate(y, z, dz_into=None) -> y * silu(z)

y, z (..., dim), any strides (rows with a unit column stride are read in place, e.g. z sliced
out of the in-projection; others cost a copy) -> out (..., dim) contiguous in y's dtype; dy, dz
in the dtypes of y, z. Same function as `silu_gate_ref` up to fp32 rounding.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from .._buffers import empty as _empty
from .._buffers import rows as _rows
from ..slab import into as _into
from .kernel import gate_bwd_kernel, gate_fwd_kernel

# (rows, columns) per program and warps: 4096-element tiles, 16 B per thread and load at bf16
CONFIG = {"BLOCK_M": 4, "BLOCK_D": 1024, "num_warps": 4}


def _grid(m: int, d: int) -> tuple[int, int]:
    return triton.cdiv(m, CONFIG["BLOCK_M"]), triton.cdiv(d, CONFIG["BLOCK_D"])


class SiluGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, z, dz_into):
        shape = y.shape
        y2, z2 = _rows(y), _rows(z)
        m, d = y2.shape
        out = _empty(m, d, like=y)
        gate_fwd_kernel[_grid(m, d)](y2, z2, out, m, d, y2.stride(0), z2.stride(0), out.stride(0),
                                     BLOCK_M=CONFIG["BLOCK_M"], BLOCK_D=CONFIG["BLOCK_D"], num_warps=CONFIG["num_warps"])
        ctx.save_for_backward(y2, z2)
        ctx.meta = (shape, z.shape, dz_into)
        return out.view(shape)

    @staticmethod
    def backward(ctx, dout):
        y2, z2 = ctx.saved_tensors
        shape, z_shape, dz_into = ctx.meta
        m, d = y2.shape
        g = _rows(dout)
        dy = _empty(m, d, like=y2)
        dz = _into(dz_into, (m, d), like=z2)  # (the slab's piece, or a fresh buffer)
        gate_bwd_kernel[_grid(m, d)](g, y2, z2, dy, dz, m, d, g.stride(0), y2.stride(0), z2.stride(0), dy.stride(0),
                                     dz.stride(0), BLOCK_M=CONFIG["BLOCK_M"], BLOCK_D=CONFIG["BLOCK_D"],
                                     num_warps=CONFIG["num_warps"])
        return dy.view(shape), dz.view(z_shape), None


def silu_gate(y: Tensor, z: Tensor, dz_into=None) -> Tensor:
    """y * silu(z); see the module docstring. dz_into: a `kernels.slab.GradSlab` part."""
    return SiluGate.apply(y, z, dz_into)

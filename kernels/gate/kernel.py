"""Triton kernels of `kernels.gate`: out = y * silu(z) and its gradients, elementwise over
(M, dim) rows with unit column strides (memory-bound: forward y, z read and out written once;
backward dout, y, z read and dy, dz written once).

    silu(z) = z s,  s = sigmoid(z);   dy = dout z s,   dz = dout y s (1 + z (1 - s))
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def gate_fwd_kernel(y_ptr, z_ptr, out_ptr, M, D, s_y, s_z, s_out, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """Grid (cdiv(M, BLOCK_M), cdiv(D, BLOCK_D)); s_*: row strides."""
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)[:, None]
    cols = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D))[None, :]
    mask = (rows < M) & (cols < D)
    y = tl.load(y_ptr + rows * s_y + cols, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + rows * s_z + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + rows * s_out + cols, (y * z * tl.sigmoid(z)).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gate_bwd_kernel(dout_ptr, y_ptr, z_ptr, dy_ptr, dz_ptr, M, D, s_dout, s_y, s_z, s_dy, s_dz,
                    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """Grid and strides as the forward; dy, dz in the dtypes of y, z."""
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)[:, None]
    cols = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D))[None, :]
    mask = (rows < M) & (cols < D)
    g = tl.load(dout_ptr + rows * s_dout + cols, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + rows * s_y + cols, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + rows * s_z + cols, mask=mask, other=0.0).to(tl.float32)
    s = tl.sigmoid(z)
    tl.store(dy_ptr + rows * s_dy + cols, (g * z * s).to(dy_ptr.dtype.element_ty), mask=mask)
    tl.store(dz_ptr + rows * s_dz + cols, (g * y * s * (1.0 + z * (1.0 - s))).to(dz_ptr.dtype.element_ty), mask=mask)

"""Triton kernels of HADES's diversity loss (reference.py has the definition).

One program per row (a token's H x P slot outputs). Forward: normalise the H vectors, the Gram
matrix G = Ŷ Ŷᵀ by one tl.dot, and the row's sum of (G - I)² (the launcher adds the rows: no
atomics, deterministic). Backward, recomputing Ŷ and G from the input:

    dL/dŶ = c (G - I) Ŷ,  c = 4 g / (rows H²)      (G symmetric; g the upstream gradient)
    dy_i  = (dŶ_i - Ŷ_i <Ŷ_i, dŶ_i>) / ||y_i||     (||y_i|| > eps, else dŶ_i / eps)

H and P are padded to powers of two >= 16 (tl.dot's smallest tile) with zeros; padded entries
are masked out of the sum. fp32 arithmetic with exact (ieee) fp32 products.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _normalised(y_ptr, row, s_row, s_h, H, P, eps, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr):
    offs_h = tl.arange(0, BLOCK_H)
    offs_p = tl.arange(0, BLOCK_P)
    mask = (offs_h < H)[:, None] & (offs_p < P)[None, :]
    y = tl.load(y_ptr + row * s_row + offs_h[:, None] * s_h + offs_p[None, :], mask=mask, other=0.0).to(tl.float32)
    raw = tl.sqrt(tl.sum(y * y, axis=1))  # (BLOCK_H,) ||y_i||
    norm = tl.maximum(raw, eps)
    return y / norm[:, None], raw, norm, offs_h, offs_p, mask


@triton.jit
def diversity_fwd_kernel(
    y_ptr, part_ptr, H, P, s_row, s_h, eps,
    BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Grid (rows,). y: (rows, H, P) with unit stride along P; part: (rows,) fp32 sums."""
    row = tl.program_id(0)
    yh, _, _, offs_h, _, _ = _normalised(y_ptr, row, s_row, s_h, H, P, eps, BLOCK_H, BLOCK_P)
    gram = tl.dot(yh, tl.trans(yh), input_precision="ieee")  # (BLOCK_H, BLOCK_H)
    valid = (offs_h < H)[:, None] & (offs_h < H)[None, :]
    diff = tl.where(valid, gram - tl.where(offs_h[:, None] == offs_h[None, :], 1.0, 0.0), 0.0)
    tl.store(part_ptr + row, tl.sum(tl.sum(diff * diff, axis=1), axis=0))


@triton.jit
def diversity_bwd_kernel(
    y_ptr, dy_ptr, scale_ptr, H, P, s_row, s_h, s_drow, s_dh, eps,
    BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Grid (rows,). scale: () fp32, c = 4 g / (rows H²). dy: (rows, H, P), unit stride along P."""
    row = tl.program_id(0)
    yh, raw, norm, offs_h, offs_p, mask = _normalised(y_ptr, row, s_row, s_h, H, P, eps, BLOCK_H, BLOCK_P)
    c = tl.load(scale_ptr)
    gram = tl.dot(yh, tl.trans(yh), input_precision="ieee")
    valid = (offs_h < H)[:, None] & (offs_h < H)[None, :]
    diff = tl.where(valid, gram - tl.where(offs_h[:, None] == offs_h[None, :], 1.0, 0.0), 0.0)
    dyh = c * tl.dot(diff, yh, input_precision="ieee")  # (BLOCK_H, BLOCK_P)
    proj = tl.sum(yh * dyh, axis=1)
    # F.normalize divides by max(||y||, eps): below eps the map is y / eps, a plain scaling
    dy = tl.where((raw > eps)[:, None], dyh - yh * proj[:, None], dyh) / norm[:, None]
    tl.store(dy_ptr + row * s_drow + offs_h[:, None] * s_dh + offs_p[None, :], dy.to(dy_ptr.dtype.element_ty), mask=mask)

"""Triton kernels of HADES's diversity loss (reference.py has the definition).

One program per BLOCK_R rows (a row: a token's H x P slot outputs). Forward: normalise the H
vectors, the Gram matrices G = Ŷ Ŷᵀ by one batched tl.dot, and the program's sum of (G - I)²
(the launcher adds the programs' sums: no atomics, deterministic). Backward, recomputing Ŷ and G from the input:

    dL/dŶ = c (G - I) Ŷ,  c = 4 g / (rows H²)      (G symmetric; g the upstream gradient)
    dy_i  = (dŶ_i - Ŷ_i <Ŷ_i, dŶ_i>) / ||y_i||     (||y_i|| > eps, else dŶ_i / eps)

H and P are padded to powers of two >= 16 (tl.dot's smallest tile) with zeros; padded entries
are masked out of the sum. fp32 arithmetic; the products' precision is DOT ("ieee": exact fp32
FMAs; "tf32x3": three tf32 tensor-core products, fp32-accurate to ~1e-6).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _normalised(y_ptr, row0, R, s_row, s_h, H, P, eps,
                BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr):
    """Rows row0 .. row0 + BLOCK_R - 1 as a (BLOCK_R, BLOCK_H, BLOCK_P) fp32 tile, each slot
    vector divided by max(||y||, eps); also ||y|| and that divisor (BLOCK_R, BLOCK_H)."""
    offs_r = row0 + tl.arange(0, BLOCK_R)
    offs_h = tl.arange(0, BLOCK_H)
    offs_p = tl.arange(0, BLOCK_P)
    mask = (offs_r < R)[:, None, None] & (offs_h < H)[None, :, None] & (offs_p < P)[None, None, :]
    ptrs = y_ptr + offs_r.to(tl.int64)[:, None, None] * s_row + offs_h[None, :, None] * s_h + offs_p[None, None, :]
    y = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    raw = tl.sqrt(tl.sum(y * y, axis=2))
    norm = tl.maximum(raw, eps)
    return y / norm[:, :, None], raw, norm, offs_r, offs_h, offs_p, mask


@triton.jit
def _gram_minus_eye(yh, offs_r, R, offs_h, H, DOT: tl.constexpr):
    """(G - I) of each row, zero outside the H x H block and on padded rows: (BLOCK_R, BLOCK_H, BLOCK_H)."""
    gram = tl.dot(yh, tl.permute(yh, (0, 2, 1)), input_precision=DOT)
    valid = (offs_r < R)[:, None, None] & ((offs_h < H)[:, None] & (offs_h < H)[None, :])[None, :, :]
    eye = tl.where(offs_h[:, None] == offs_h[None, :], 1.0, 0.0)[None, :, :]
    return tl.where(valid, gram - eye, 0.0)


@triton.jit
def diversity_fwd_kernel(
    y_ptr, part_ptr, R, H, P, s_row, s_h, eps,
    BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr, DOT: tl.constexpr,
):
    """Grid (cdiv(R, BLOCK_R),). y: (R, H, P) with unit stride along P; part: one fp32 sum per program."""
    pid = tl.program_id(0)
    yh, _, _, offs_r, offs_h, _, _ = _normalised(y_ptr, pid * BLOCK_R, R, s_row, s_h, H, P, eps, BLOCK_R, BLOCK_H, BLOCK_P)
    diff = _gram_minus_eye(yh, offs_r, R, offs_h, H, DOT)
    tl.store(part_ptr + pid, tl.sum(tl.sum(tl.sum(diff * diff, axis=2), axis=1), axis=0))


@triton.jit
def diversity_bwd_kernel(
    y_ptr, dy_ptr, scale_ptr, R, H, P, s_row, s_h, s_drow, s_dh, eps,
    BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr, DOT: tl.constexpr,
):
    """Grid (cdiv(R, BLOCK_R),). scale: (1,) fp32, c = 4 g / (R H²). dy: (R, H, P), unit stride along P."""
    pid = tl.program_id(0)
    yh, raw, norm, offs_r, offs_h, offs_p, mask = _normalised(
        y_ptr, pid * BLOCK_R, R, s_row, s_h, H, P, eps, BLOCK_R, BLOCK_H, BLOCK_P)
    c = tl.load(scale_ptr)
    diff = _gram_minus_eye(yh, offs_r, R, offs_h, H, DOT)
    dyh = c * tl.dot(diff, yh, input_precision=DOT)  # (BLOCK_R, BLOCK_H, BLOCK_P)
    proj = tl.sum(yh * dyh, axis=2)
    # F.normalize divides by max(||y||, eps): below eps the map is y / eps, a plain scaling
    dy = tl.where((raw > eps)[:, :, None], dyh - yh * proj[:, :, None], dyh) / norm[:, :, None]
    ptrs = dy_ptr + offs_r.to(tl.int64)[:, None, None] * s_drow + offs_h[None, :, None] * s_dh + offs_p[None, None, :]
    tl.store(ptrs, dy.to(dy_ptr.dtype.element_ty), mask=mask)

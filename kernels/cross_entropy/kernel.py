"""Triton kernel of the fused cross-entropy forward + logits gradient (`reference.py`).

Memory-bound: with a 50K vocabulary the logits are the largest tensor of a training step. One
program per row reads the row twice, in blocks of BLOCK_V, in the logits' own dtype (bf16 in
training) with fp32 arithmetic:

  pass 1: running max m and running sum s of exp(x - m) (online softmax), so that
          lse = m + log(s) and loss = lse - x[label];
  pass 2: grad = (exp(x - lse) - onehot(label)) * scale, written once in the logits' dtype,
          where scale = 1 / #valid rows (the mean), read from device memory so that the host
          never waits for the count.

The second read of a row (~100 KB in bf16) hits L2 only while the rows in flight fit in it
(~400 rows in H100's 50 MB); `benchmarks/cross_entropy.py` tells from the time of the forward
without (one read) and with the gradient (floor: two transfers) whether it does.

Ignored rows (label == ignore_index) get loss 0 and an all-zero gradient row; a label outside
[0, V) gives a NaN loss instead of an out-of-bounds read.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _lse_step(x, m, s):
    """Fold a block x (fp32, masked entries -inf) into the running max m and sum s of exp(x - m)."""
    m_new = tl.maximum(m, tl.max(x, axis=0))
    return m_new, s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)


@triton.jit
def _grad_block(x, cols, label, lse, scale, valid):
    """(softmax - onehot) * scale of a block x (fp32); exact zeros on an ignored row, even one
    that holds inf or NaN."""
    p = tl.exp(x - lse)
    g = tl.where(cols == label, p - 1.0, p) * scale
    return tl.where(valid, g, 0.0)


@triton.jit
def ce_fwd_kernel(
    x_ptr, labels_ptr, scale_ptr, loss_ptr, lse_ptr, dx_ptr,
    s_x, s_dx, ignore_index,
    V: tl.constexpr, BLOCK_V: tl.constexpr, WRITE_GRAD: tl.constexpr,
):
    """Grid (N,). x: (N, V) with unit column stride and row stride s_x; labels: (N,) int64;
    scale: (1,) fp32; loss, lse: (N,) fp32; dx: (N, V) with row stride s_dx (unused unless
    WRITE_GRAD). V is a compile-time constant (one vocabulary per model): the full blocks load
    and store without a mask (vectorised when the row stride is a multiple of 16 elements),
    only the tail block is masked."""
    V_FULL: tl.constexpr = V // BLOCK_V * BLOCK_V
    row = tl.program_id(0).to(tl.int64)  # row * s_x overflows int32 beyond ~42K rows of 50K
    x_row = x_ptr + row * s_x
    offs = tl.arange(0, BLOCK_V)
    label = tl.load(labels_ptr + row)
    valid = label != ignore_index

    m = float("-inf")
    s = 0.0
    for start in range(0, V_FULL, BLOCK_V):
        m, s = _lse_step(tl.load(x_row + start + offs).to(tl.float32), m, s)
    if V_FULL < V:
        cols = V_FULL + offs
        m, s = _lse_step(tl.load(x_row + cols, mask=cols < V, other=float("-inf")).to(tl.float32), m, s)
    lse = m + tl.log(s)

    in_range = (label >= 0) & (label < V)
    x_label = tl.load(x_row + label, mask=valid & in_range, other=float("nan")).to(tl.float32)
    tl.store(loss_ptr + row, tl.where(valid, lse - x_label, 0.0))
    tl.store(lse_ptr + row, lse)

    if WRITE_GRAD:
        scale = tl.load(scale_ptr)
        dx_row = dx_ptr + row * s_dx
        for start in range(0, V_FULL, BLOCK_V):
            cols = start + offs
            g = _grad_block(tl.load(x_row + cols).to(tl.float32), cols, label, lse, scale, valid)
            tl.store(dx_row + cols, g.to(dx_ptr.dtype.element_ty))
        if V_FULL < V:
            cols = V_FULL + offs
            mask = cols < V
            g = _grad_block(tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32), cols, label, lse, scale, valid)
            tl.store(dx_row + cols, g.to(dx_ptr.dtype.element_ty), mask=mask)

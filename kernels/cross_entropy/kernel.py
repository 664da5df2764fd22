"""Triton kernels of the fused cross-entropy (`reference.py`): a forward that reads the logits
once and a backward that recomputes the softmax from them.

Memory-bound: with a 50K vocabulary the logits are the largest tensor of a training step. One
program per row, blocks of BLOCK_V columns, the logits' own dtype in memory (bf16 in training)
and fp32 arithmetic:

  forward:  running max m and running sum s of exp(x - m) (online softmax), so that
            lse = m + log(s) and loss = lse - x[label]; it stores the per-row loss and lse
            (fp32) and nothing of the logits' size;
  backward: grad = (exp(x - lse) - onehot(label)) * g / #valid, written once in the logits'
            dtype, where g (the upstream gradient of the loss) and #valid are read from device
            memory, so that the host never waits for either.

Padded vocabulary: only the first V (= n_classes) columns of a row are classes; the forward
reads nothing beyond them (as if the pad columns were -inf) and the backward writes the whole
row of V_TOTAL columns, zeros in the pad columns, so that the caller can hand over the LM
head's padded output instead of a slice of it.

Ignored rows (label == ignore_index) get loss 0 and an all-zero gradient row; a label outside
[0, V) gives a NaN loss instead of an out-of-bounds read (and a gradient row with no -1).
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
def ce_fwd_kernel(
    x_ptr, labels_ptr, loss_ptr, lse_ptr,
    s_x, ignore_index,
    V: tl.constexpr, BLOCK_V: tl.constexpr,
):
    """Grid (N,). x: (N, >= V) with unit column stride and row stride s_x, of which the first V
    columns are read; labels: (N,) int64; loss, lse: (N,) fp32. V is a compile-time constant
    (one vocabulary per model): the full blocks load without a mask (vectorised when the row
    stride is a multiple of 16 bytes' worth of elements), only the tail block is masked."""
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


@triton.jit
def _grad_block(x, cols, label, lse, scale, valid):
    """(softmax - onehot) * scale of a block x (fp32); exact zeros on an ignored row, even one
    that holds inf or NaN."""
    p = tl.exp(x - lse)
    g = tl.where(cols == label, p - 1.0, p) * scale
    return tl.where(valid, g, 0.0)


@triton.jit
def ce_bwd_kernel(
    x_ptr, labels_ptr, lse_ptr, n_valid_ptr, dloss_ptr, dx_ptr,
    s_x, s_dx, ignore_index,
    V: tl.constexpr, V_TOTAL: tl.constexpr, BLOCK_V: tl.constexpr,
):
    """Grid (N,). x: (N, >= V) as in the forward, of which the first V columns are read; labels:
    (N,) int64; lse: (N,) fp32 from the forward; n_valid: (1,) int64 (#rows not ignored);
    dloss: (1,) fp32, the upstream gradient of the mean loss; dx: (N, V_TOTAL) with unit column
    stride and row stride s_dx, every column written: the gradient in columns < V, 0 beyond.

    The columns [0, V_CLS) (whole blocks of classes) load and store without a mask; the blocks
    from V_CLS to V_TOTAL hold the class tail and the pad columns: loads masked to < V, stores
    to < V_TOTAL."""
    V_CLS: tl.constexpr = V // BLOCK_V * BLOCK_V
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * s_x
    dx_row = dx_ptr + row * s_dx
    offs = tl.arange(0, BLOCK_V)
    label = tl.load(labels_ptr + row)
    valid = label != ignore_index
    lse = tl.load(lse_ptr + row)
    # g / 0 on an all-ignored batch is never used: every row is then invalid
    scale = tl.load(dloss_ptr).to(tl.float32) / tl.load(n_valid_ptr).to(tl.float32)

    for start in range(0, V_CLS, BLOCK_V):
        cols = start + offs
        g = _grad_block(tl.load(x_row + cols).to(tl.float32), cols, label, lse, scale, valid)
        tl.store(dx_row + cols, g.to(dx_ptr.dtype.element_ty))
    for start in range(V_CLS, V_TOTAL, BLOCK_V):
        cols = start + offs
        is_class = cols < V
        x = tl.load(x_row + cols, mask=is_class, other=0.0).to(tl.float32)
        g = tl.where(is_class, _grad_block(x, cols, label, lse, scale, valid), 0.0)
        tl.store(dx_row + cols, g.to(dx_ptr.dtype.element_ty), mask=cols < V_TOTAL)

"""Autograd op and public function of the fused Triton cross-entropy; `kernel.py`.

    cross_entropy(logits, labels, ignore_index=-100) -> loss

logits (N, V) in any float dtype (bf16 in training), any row stride (a column stride other
than 1 costs a copy); labels (N,) integer -> scalar mean loss in fp32 over the rows whose label
is not ignore_index. Same function as `reference.cross_entropy_ref` and as
`F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)`, without the fp32 copy.

The forward also writes the gradient d loss / d logits = (softmax - onehot) / #valid, once, in
the logits' dtype, into a buffer that it saves (when the logits need a gradient and grad mode is
on); the backward only multiplies that buffer, in place, by the incoming scalar gradient and
hands it on. The buffer is not the logits' own storage: the caller may still read the logits
(the LM returns them). A second backward through the same graph (retain_graph=True) is refused
by autograd's version check of the saved buffer, which the first backward has scaled.
"""

from __future__ import annotations

import os

import torch
import triton
from torch import Tensor

from .kernel import ce_fwd_kernel

CONFIG = {"BLOCK_V": 4096, "num_warps": 8}
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# Tests set this to fill every output buffer with NaN before the kernels write it, so a row or
# block that a kernel fails to write shows up as NaN instead of stale memory.
POISON_OUTPUTS = False


def _empty(*shape, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    dtype = dtype or like.dtype
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype)
    return torch.empty(shape, device=like.device, dtype=dtype)


def cross_entropy_rows(logits: Tensor, labels: Tensor, ignore_index: int = -100, write_grad: bool = False):
    """One launch of the kernel, no autograd. logits (N, V), labels (N,) -> loss_rows (N,) fp32
    (0 on ignored rows), lse (N,) fp32, n_valid (0-dim int64) and, with write_grad, the gradient
    of the mean loss (N, V) in the logits' dtype (else None)."""
    assert logits.is_cuda or _INTERPRET, "the Triton cross-entropy needs CUDA tensors"
    assert logits.ndim == 2 and labels.shape == logits.shape[:1], (
        f"logits must be (N, V) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    assert logits.is_floating_point() and not labels.is_floating_point(), (
        f"logits must be float and labels integer, got {logits.dtype} and {labels.dtype}")
    x = logits if logits.stride(1) == 1 else logits.contiguous()
    labels = labels.to(torch.int64).contiguous()
    n, v = x.shape
    n_valid = (labels != ignore_index).sum()
    scale = (1.0 / n_valid.float()).reshape(1)  # inf when every row is ignored; the kernel never uses it then
    loss_rows = _empty(n, like=x, dtype=torch.float32)
    lse = _empty(n, like=x, dtype=torch.float32)
    dx = _empty(n, v, like=x) if write_grad else None
    if n > 0:
        block = min(CONFIG["BLOCK_V"], triton.next_power_of_2(v))
        ce_fwd_kernel[(n,)](
            x, labels, scale, loss_rows, lse, dx if write_grad else loss_rows,
            x.stride(0), dx.stride(0) if write_grad else 0, ignore_index,
            V=v, BLOCK_V=block, WRITE_GRAD=write_grad, num_warps=CONFIG["num_warps"],
        )
    return loss_rows, lse, n_valid, dx


class CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, ignore_index):
        loss_rows, _, n_valid, dx = cross_entropy_rows(logits, labels, ignore_index, write_grad=True)
        ctx.save_for_backward(dx)
        return loss_rows.sum() / n_valid  # 0 / 0 = NaN when every row is ignored, as F.cross_entropy

    @staticmethod
    def backward(ctx, dloss):
        (dx,) = ctx.saved_tensors
        return dx.mul_(dloss), None, None


def cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean cross-entropy of logits (N, V) against labels (N,), rows with ignore_index left out
    -> scalar fp32; Triton. The gradient buffer is written only when it can be used."""
    if logits.requires_grad and torch.is_grad_enabled():
        return CrossEntropy.apply(logits, labels, ignore_index)
    loss_rows, _, n_valid, _ = cross_entropy_rows(logits, labels, ignore_index)
    return loss_rows.sum() / n_valid

"""Autograd op and public functions of the fused Triton cross-entropy; `kernel.py`.

    cross_entropy(logits, labels, ignore_index=-100, n_classes=None) -> loss

logits (N, V) in any float dtype (bf16 in training), any row stride (a column stride other
than 1 costs a copy); labels (N,) integer -> scalar mean loss in fp32 over the rows whose label
is not ignore_index. Same function as `reference.cross_entropy_ref` and as
`F.cross_entropy(logits[:, :n_classes].float(), labels, ignore_index=ignore_index)`, without the
fp32 copy. n_classes (default V): only the first n_classes columns are classes, the others are
padding (the LM head's padded vocabulary), left out of the softmax; their gradient is 0.

The forward reads the logits once and keeps, for the backward, only the per-row log-sum-exp
(fp32, N floats) and #valid rows (a device scalar) besides the logits it was given (saved, not
copied: the caller must not modify them in place before the backward, autograd's version check
says so). The backward recomputes softmax from the logits and writes
d loss / d logits = (softmax - onehot) * g / #valid once, in the logits' dtype, for the whole
(N, V) row including the pad columns, with the upstream gradient g read on the device: no
scaling pass, no host sync. Nothing saved is modified, so a second backward through the same
graph (retain_graph=True) works and gives the same gradient. Not twice differentiable.
"""

from __future__ import annotations

import os

import torch
import triton
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._buffers import empty as _empty
from .kernel import ce_bwd_kernel, ce_fwd_kernel

CONFIG = {"BLOCK_V": 4096, "num_warps": 8}
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"



def _prepare(logits: Tensor, labels: Tensor, n_classes: int | None) -> tuple[Tensor, Tensor, int]:
    """Checks; the logits with unit column stride (a copy of the class columns otherwise),
    int64 labels and the number of classes."""
    assert logits.is_cuda or _INTERPRET, "the Triton cross-entropy needs CUDA tensors"
    assert logits.ndim == 2 and labels.shape == logits.shape[:1], (
        f"logits must be (N, V) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    assert logits.is_floating_point() and not labels.is_floating_point(), (
        f"logits must be float and labels integer, got {logits.dtype} and {labels.dtype}")
    v = logits.shape[1] if n_classes is None else int(n_classes)
    assert 0 < v <= logits.shape[1], f"n_classes must be in [1, {logits.shape[1]}], got {n_classes}"
    x = logits if logits.stride(1) == 1 else logits[:, :v].contiguous()
    return x, labels.to(torch.int64).contiguous(), v


def _forward(x: Tensor, labels: Tensor, ignore_index: int, v: int) -> tuple[Tensor, Tensor, Tensor]:
    n = x.shape[0]
    n_valid = (labels != ignore_index).sum()
    loss_rows = _empty(n, like=x, dtype=torch.float32)
    lse = _empty(n, like=x, dtype=torch.float32)
    if n > 0:
        ce_fwd_kernel[(n,)](
            x, labels, loss_rows, lse, x.stride(0), ignore_index,
            V=v, BLOCK_V=min(CONFIG["BLOCK_V"], triton.next_power_of_2(v)), num_warps=CONFIG["num_warps"],
        )
    return loss_rows, lse, n_valid


def _backward(x: Tensor, labels: Tensor, lse: Tensor, n_valid: Tensor, dloss: Tensor,
              ignore_index: int, v: int, v_total: int) -> Tensor:
    n = x.shape[0]
    dx = _empty(n, v_total, like=x)
    if n > 0:
        g = dloss.detach().to(device=x.device, dtype=torch.float32).reshape(1)
        ce_bwd_kernel[(n,)](
            x, labels, lse, n_valid.reshape(1), g, dx, x.stride(0), dx.stride(0), ignore_index,
            V=v, V_TOTAL=v_total, BLOCK_V=min(CONFIG["BLOCK_V"], triton.next_power_of_2(v_total)),
            num_warps=CONFIG["num_warps"],
        )
    return dx


def cross_entropy_rows(logits: Tensor, labels: Tensor, ignore_index: int = -100,
                       n_classes: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The forward kernel, no autograd. logits (N, V), labels (N,) -> loss_rows (N,) fp32 (0 on
    ignored rows, NaN where a label is outside [0, n_classes)), lse (N,) fp32 over the first
    n_classes columns, n_valid (0-dim int64)."""
    x, labels, v = _prepare(logits, labels, n_classes)
    return _forward(x, labels, ignore_index, v)


def cross_entropy_grad(logits: Tensor, labels: Tensor, lse: Tensor, n_valid: Tensor, dloss: Tensor | None = None,
                       ignore_index: int = -100, n_classes: int | None = None) -> Tensor:
    """The backward kernel, no autograd: d (dloss * mean loss) / d logits, (N, V) in the logits'
    dtype (contiguous), from lse and n_valid of `cross_entropy_rows`; dloss a scalar tensor
    (default 1). Columns >= n_classes get 0."""
    x, labels, v = _prepare(logits, labels, n_classes)
    if dloss is None:
        dloss = torch.ones((), device=x.device)
    return _backward(x, labels, lse, n_valid, dloss, ignore_index, v, logits.shape[1])


class CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, ignore_index, n_classes):
        x, labels, v = _prepare(logits, labels, n_classes)
        loss_rows, lse, n_valid = _forward(x, labels, ignore_index, v)
        ctx.save_for_backward(x, labels, lse, n_valid)
        ctx.ignore_index, ctx.v, ctx.v_total = ignore_index, v, logits.shape[1]
        return loss_rows.sum() / n_valid  # 0 / 0 = NaN when every row is ignored, as F.cross_entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, dloss):
        x, labels, lse, n_valid = ctx.saved_tensors
        return _backward(x, labels, lse, n_valid, dloss, ctx.ignore_index, ctx.v, ctx.v_total), None, None, None


def cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = -100, n_classes: int | None = None) -> Tensor:
    """Mean cross-entropy of logits (N, V) (classes: the first n_classes columns, default all)
    against labels (N,) in [0, n_classes), rows with ignore_index left out -> scalar fp32;
    Triton. Saves what the backward needs only when it can be used."""
    if logits.requires_grad and torch.is_grad_enabled():
        return CrossEntropy.apply(logits, labels, ignore_index, n_classes)
    loss_rows, _, n_valid = cross_entropy_rows(logits, labels, ignore_index, n_classes)
    return loss_rows.sum() / n_valid

"""Token-level cross-entropy of the LM head, fused: bf16 logits in, fp32 loss out.

    from kernels.cross_entropy import cross_entropy
    loss = cross_entropy(logits, labels, ignore_index=-100)   # logits (N, V), labels (N,)
    loss = cross_entropy(padded, labels, n_classes=vocab)     # padded (N, V_padded): classes < vocab

Triton on CUDA (`op.py`: one read of the logits forward, which keeps only the per-row
log-sum-exp; the backward recomputes softmax and writes the logits gradient once, in their
dtype, no fp32 copy), the plain-torch reference (`reference.py`) elsewhere.
"""

from __future__ import annotations

from torch import Tensor

from .._triton import triton_op
from .reference import cross_entropy_ref


def cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = -100, n_classes: int | None = None) -> Tensor:
    """Mean over the rows whose label is not ignore_index of logsumexp(logits[i, :n_classes]) -
    logits[i, labels[i]], accumulated in fp32 from logits of any float dtype.

    logits: (N, V), any row stride; labels: (N,) integer in [0, n_classes) -> scalar fp32 loss
    (fp64 for fp64 logits off CUDA; NaN when every row is ignored, like F.cross_entropy).
    n_classes (default V): the columns from n_classes on are padding (the LM head's padded
    vocabulary): left out of the softmax, gradient 0, so the caller passes the padded logits
    instead of a slice (whose backward would zero-fill and copy a gradient of the padded size).
    Gradient only with respect to the logits, (N, V) in their dtype. Triton for CUDA inputs when
    it imports, the reference otherwise."""
    if logits.is_cuda:
        op = triton_op(__name__, "cross_entropy")
        if op is not None:
            return op(logits, labels, ignore_index, n_classes)
    return cross_entropy_ref(logits, labels, ignore_index, n_classes)


__all__ = ["cross_entropy", "cross_entropy_ref"]

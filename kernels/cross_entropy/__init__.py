"""Token-level cross-entropy of the LM head, fused: bf16 logits in, fp32 loss out.

    from kernels.cross_entropy import cross_entropy
    loss = cross_entropy(logits, labels, ignore_index=-100)   # logits (N, V), labels (N,)

Triton on CUDA (`op.py`: one read of the logits forward, the logits gradient written once in
their dtype, no fp32 copy), the plain-torch reference (`reference.py`) elsewhere.
"""

from __future__ import annotations

from torch import Tensor

from .reference import cross_entropy_ref


def cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean over the rows whose label is not ignore_index of logsumexp(logits[i]) -
    logits[i, labels[i]], accumulated in fp32 from logits of any float dtype.

    logits: (N, V), any row stride; labels: (N,) integer -> scalar fp32 loss (fp64 for fp64
    logits off CUDA; NaN when every row is ignored, like F.cross_entropy). Gradient only with respect to the logits, in their
    dtype. Triton for CUDA inputs when it imports, the reference otherwise."""
    if logits.is_cuda:
        try:
            from .op import cross_entropy as op
        except ImportError:
            op = None
        if op is not None:
            return op(logits, labels, ignore_index)
    return cross_entropy_ref(logits, labels, ignore_index)


__all__ = ["cross_entropy", "cross_entropy_ref"]

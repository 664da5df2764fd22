"""Plain-PyTorch reference of the token-level cross-entropy of a causal LM.

    loss_i = logsumexp_v(logits[i, v]) - logits[i, labels[i]]      (0 where labels[i] == ignore_index)
    loss   = sum_i loss_i / #{i : labels[i] != ignore_index}

the function of `F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)` with the
default mean reduction: NaN when every row is ignored (0 / 0), and then zero gradients.

Shapes: logits (N, V) in any float dtype and strides; labels (N,) integer -> scalar loss in fp32
(fp64 for fp64 logits: the oracle of the tests). The gradient with respect to the logits is
(softmax(logits) - onehot(labels)) / #valid on the valid rows and 0 on the ignored ones.

n_classes (default V): only the first n_classes columns are classes (a padded vocabulary); the
reference is then the above on `logits[:, :n_classes]`, so the pad columns are left out of the
softmax and get a zero gradient. Labels must be < n_classes (one in [n_classes, V) is out of
range for the gather: an index error here, a NaN row loss in the Triton op).
"""

from __future__ import annotations

import torch
from torch import Tensor


def cross_entropy_rows_ref(logits: Tensor, labels: Tensor, ignore_index: int = -100,
                           n_classes: int | None = None) -> tuple[Tensor, Tensor]:
    """Per-row loss (N,) (0 on ignored rows) and log-sum-exp (N,) over the first n_classes
    columns, in fp32 (fp64 for fp64 logits)."""
    assert logits.ndim == 2 and labels.shape == logits.shape[:1], (
        f"logits must be (N, V) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if n_classes is not None:
        assert 0 < n_classes <= logits.shape[1], f"n_classes must be in [1, {logits.shape[1]}], got {n_classes}"
        logits = logits[:, :n_classes]
    x = logits if logits.dtype == torch.float64 else logits.float()
    valid = labels != ignore_index
    lse = torch.logsumexp(x, dim=-1)
    target = x.gather(-1, torch.where(valid, labels, 0).long()[:, None])[:, 0]
    return torch.where(valid, lse - target, 0.0), lse


def cross_entropy_ref(logits: Tensor, labels: Tensor, ignore_index: int = -100, n_classes: int | None = None) -> Tensor:
    """Mean cross-entropy over the rows whose label is not ignore_index; shapes in the module docstring."""
    loss, _ = cross_entropy_rows_ref(logits, labels, ignore_index, n_classes)
    return loss.sum() / (labels != ignore_index).sum()

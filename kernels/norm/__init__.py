"""RMS norms of the language models, fused: RMSNorm and Mamba2's gated RMSNorm(y * silu(z)).

    from kernels.norm import rms_norm, gated_rms_norm
    out = rms_norm(x, weight, eps)                           # x (..., dim), weight (dim,)
    out = gated_rms_norm(y, z, weight, eps, group_size)      # y, z (..., dim), groups of group_size

Triton on CUDA for fp32 / bf16 / fp16 tensors (`op.py`: one kernel forward, one backward,
fp32 statistics), the plain-torch reference (`reference.py`, the math of
`hades.models.layers.RMSNorm` / `GatedRMSNorm`) elsewhere, for fp64, and for rows longer than
`op.MAX_GROUP`. The output has the dtype of x (of y), also under autocast with an fp32 weight.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._triton import triton_op
from .reference import gated_rms_norm_ref, rms_norm_ref

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _op(tensors: tuple[Tensor, ...], group_size: int):
    """kernels.norm.op when every tensor is a CUDA tensor of a Triton dtype and Triton imports."""
    if not all(t.is_cuda and t.dtype in _TRITON_DTYPES for t in tensors):
        return None
    op = triton_op(__name__)
    return op if op is not None and group_size <= op.MAX_GROUP else None


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-5, residual=None) -> Tensor:
    """x (..., dim), any leading dims and strides; weight (dim,) -> x / sqrt(mean(x^2) + eps) *
    weight, (..., dim) in x's dtype; statistics in fp32 (fp64 for fp64 inputs). residual: a
    holder from `residual_grad(x, weight)` (the Triton path only; see `residual_add`)."""
    op = _op((x, weight), x.shape[-1])
    if op is not None:
        return op.rms_norm(x, weight, eps, residual=residual)
    assert residual is None, "a residual holder is for the Triton norm only (residual_grad returns None elsewhere)"
    return rms_norm_ref(x, weight, eps)


def residual_grad(x: Tensor, weight: Tensor):
    """For a pre-norm block x + f(rms_norm(x)): a holder to pass to `rms_norm(..., residual=)`
    and `residual_add` when rms_norm(x, weight) runs the Triton kernels (the residual stream's
    gradient is then added inside the norm's backward kernel), else None (use x + y)."""
    op = _op((x, weight), x.shape[-1])
    return op.ResidualGrad() if op is not None else None


def residual_add(x: Tensor, y: Tensor, residual) -> Tensor:
    """x + y; with a holder from `residual_grad`, x's gradient through the + goes to the norm's
    backward kernel (kernels.norm.op.residual_add)."""
    if residual is None:
        return x + y
    return triton_op(__name__).residual_add(x, y, residual)


def gated_rms_norm(y: Tensor, z: Tensor, weight: Tensor, eps: float = 1e-5, group_size: int | None = None,
                   dz_into=None, dout_extra=None) -> Tensor:
    """y, z (..., dim), any leading dims and strides, dtypes may differ; weight (dim,) ->
    h / sqrt(mean_group(h^2) + eps) * weight with h = y * silu(z) and the mean over each group of
    group_size consecutive channels (None = dim), (..., dim) in y's dtype; fp32 statistics.
    dz_into: a `kernels.slab.GradSlab` part for z's gradient (the Triton path writes it there;
    the reference ignores it, and the slab's split copies the gradient in). dout_extra: a holder
    from `grad_holder` (the Triton path only): a second consumer's gradient of the output, left
    there, is added inside the backward kernel instead of by autograd."""
    op = _op((y, z, weight), group_size or y.shape[-1])
    if op is not None:
        return op.gated_rms_norm(y, z, weight, eps, group_size, dz_into=dz_into, dout_extra=dout_extra)
    assert dout_extra is None, "a gradient holder is for the Triton norm only (grad_holder returns None elsewhere)"
    return gated_rms_norm_ref(y, z, weight, eps, group_size)


def grad_holder(y: Tensor, z: Tensor, weight: Tensor, group_size: int | None = None):
    """For gated_rms_norm(y, z, weight, ...) on the Triton path: a holder (`op.GradHolder`) that
    a consumer of the norm's output can leave its gradient in (`kernels.diversity`'s grad_to),
    to pass as dout_extra; else None (let autograd add the gradients)."""
    op = _op((y, z, weight), group_size or y.shape[-1])
    return op.GradHolder() if op is not None else None


__all__ = ["gated_rms_norm", "gated_rms_norm_ref", "grad_holder", "residual_add", "residual_grad", "rms_norm", "rms_norm_ref"]

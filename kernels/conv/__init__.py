"""Short causal depthwise conv (+ SiLU) of the Mamba-style and attention-style mixers.

    from kernels.conv import causal_conv1d
    y = causal_conv1d(x, weight, bias=None, activation=True)   # x (batch, seqlen, channels)

Triton on CUDA (`op.py`), the plain-torch reference (`reference.py`) elsewhere.
"""

from __future__ import annotations

from torch import Tensor

from .._triton import triton_op
from .reference import causal_conv1d_ref


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: bool = True,
                  dx_into=None) -> Tensor:
    """y = act(bias + causal depthwise conv of x); Triton for CUDA inputs when it imports.
    dx_into: a `kernels.slab.GradSlab` part for x's gradient (Triton path; the reference ignores it)."""
    if x.is_cuda:
        op = triton_op(__name__, "causal_conv1d")
        if op is not None:
            return op(x, weight, bias, activation, dx_into=dx_into)
    return causal_conv1d_ref(x, weight.reshape(x.shape[-1], -1), bias, activation)


__all__ = ["causal_conv1d", "causal_conv1d_ref"]

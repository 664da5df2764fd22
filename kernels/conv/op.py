"""Autograd op and public function of the Triton short causal conv (+ SiLU); `kernel.py`.

    causal_conv1d(x, weight, bias=None, activation=True) -> y

x (batch, seqlen, channels) in any float dtype and strides with a unit channel stride or not;
weight (channels, K); bias (channels,) or None -> y (batch, seqlen, channels) in x's dtype,
contiguous. fp32 arithmetic. Same function as `reference.causal_conv1d_ref`.
"""

from __future__ import annotations

import os

import torch
import triton
from torch import Tensor

from .._buffers import empty as _empty
from .kernel import conv_bwd_kernel, conv_fwd_kernel

CONFIG = {"BLOCK_T": 64, "BLOCK_C": 64, "num_warps": 4}
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"




class CausalConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        b, t, ch = x.shape
        k = weight.shape[-1]
        w = weight.reshape(ch, k).contiguous()
        y = _empty(b, t, ch, like=x)
        bt, bc = CONFIG["BLOCK_T"], min(CONFIG["BLOCK_C"], triton.next_power_of_2(ch))
        conv_fwd_kernel[(triton.cdiv(t, bt), triton.cdiv(ch, bc), b)](
            x, w, bias if bias is not None else w, y, t, ch, *x.stride(), *y.stride(),
            K=k, BLOCK_T=bt, BLOCK_C=bc, HAS_BIAS=bias is not None, ACT=activation,
            num_warps=CONFIG["num_warps"],
        )
        ctx.save_for_backward(x, w, bias)
        ctx.activation = activation
        ctx.w_shape, ctx.w_dtype = weight.shape, weight.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, bias = ctx.saved_tensors
        b, t, ch = x.shape
        k = w.shape[-1]
        bt, bc = CONFIG["BLOCK_T"], min(CONFIG["BLOCK_C"], triton.next_power_of_2(ch))
        nt = triton.cdiv(t, bt)
        dx = _empty(b, t, ch, like=x)
        dw_part = _empty(b * nt, ch, k, like=x, dtype=torch.float32)
        db_part = _empty(b * nt, ch, like=x, dtype=torch.float32) if bias is not None else dw_part
        conv_bwd_kernel[(nt, triton.cdiv(ch, bc), b)](
            x, w, bias if bias is not None else w, dy, dx, dw_part, db_part, t, ch,
            *x.stride(), *dy.stride(), *dx.stride(),
            K=k, BLOCK_T=bt, BLOCK_C=bc, HAS_BIAS=bias is not None, ACT=ctx.activation,
            num_warps=CONFIG["num_warps"],
        )
        dw = dw_part.sum(0).reshape(ctx.w_shape).to(ctx.w_dtype)
        db = db_part.sum(0).to(bias.dtype) if bias is not None else None
        return dx, dw, db, None


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: bool = True) -> Tensor:
    """Depthwise causal conv over time (+ SiLU), Triton. x (batch, seqlen, channels);
    weight (channels, K) (an nn.Conv1d weight (channels, 1, K) works too); bias (channels,)
    or None -> y (batch, seqlen, channels) in x's dtype."""
    assert x.is_cuda or _INTERPRET, "the Triton conv needs CUDA tensors"
    ch = x.shape[-1]
    assert weight.numel() % ch == 0 and weight.shape[0] == ch, f"weight must be (channels={ch}, K), got {tuple(weight.shape)}"
    return CausalConv1d.apply(x, weight, bias, activation)

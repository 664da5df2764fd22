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
from ..slab import into as _into
from .kernel import conv_bwd_kernel, conv_bwd_stream_kernel, conv_fwd_kernel, conv_fwd_stream_kernel

# fwd and bwd: layout "stream" (`conv_fwd_stream_kernel`, `conv_bwd_stream_kernel`: segments of
# SEG tokens walked in tiles of BLOCK_T, BLOCK_C channels over 32 * num_warps lanes) or "tile"
# (`conv_fwd_kernel`, `conv_bwd_kernel`: (BLOCK_T, BLOCK_C) tiles, CONFIG["fwd_tile"],
# CONFIG["bwd_tile"]). `benchmarks/conv.py --sweep` times other choices.
CONFIG = {
    "fwd": {"layout": "stream", "BLOCK_T": 8, "BLOCK_C": 128, "SEG": 128, "num_warps": 2},
    "fwd_tile": {"BLOCK_T": 64, "BLOCK_C": 64, "num_warps": 4},
    # bwd: the best all-round of `--sweep` on an H200 (1.77-1.88x the memory floor at the three
    # mixers' widths, docs/benchmarks.md section 9)
    "bwd": {"layout": "stream", "BLOCK_T": 8, "BLOCK_C": 128, "SEG": 128, "num_warps": 2},
    "bwd_tile": {"BLOCK_T": 64, "BLOCK_C": 64, "num_warps": 4},
}
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"




class CausalConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, activation, dx_into):
        b, t, ch = x.shape
        k = weight.shape[-1]
        w = weight.reshape(ch, k).contiguous()
        y = _empty(b, t, ch, like=x)
        cfg = CONFIG["fwd"]
        stream = cfg.get("layout") == "stream" and k >= 2
        if not stream:
            cfg = CONFIG["fwd_tile"]
        bt, bc = cfg["BLOCK_T"], min(cfg["BLOCK_C"], max(32, triton.next_power_of_2(ch)))
        meta = dict(K=k, BLOCK_T=bt, BLOCK_C=bc, HAS_BIAS=bias is not None, ACT=activation, num_warps=cfg["num_warps"])
        args = (x, w, bias if bias is not None else w, y, t, ch)
        if stream:
            seg = min(cfg["SEG"], triton.cdiv(t, bt) * bt)
            conv_fwd_stream_kernel[(triton.cdiv(t, seg), triton.cdiv(ch, bc), b)](*args, seg, *x.stride(), *y.stride(), **meta)
        else:
            conv_fwd_kernel[(triton.cdiv(t, bt), triton.cdiv(ch, bc), b)](*args, *x.stride(), *y.stride(), **meta)
        ctx.save_for_backward(x, w, bias)
        ctx.activation = activation
        ctx.dx_into = dx_into
        ctx.w_shape, ctx.w_dtype = weight.shape, weight.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, bias = ctx.saved_tensors
        b, t, ch = x.shape
        k = w.shape[-1]
        dx = _into(ctx.dx_into, (b, t, ch), like=x)
        cfg = CONFIG["bwd"]
        stream = cfg["layout"] == "stream" and 2 <= k <= cfg["BLOCK_T"] + 1  # (its tail needs K-1 <= BLOCK_T rows)
        if not stream:
            cfg = CONFIG["bwd_tile"]
        bt, bc = cfg["BLOCK_T"], min(cfg["BLOCK_C"], max(32, triton.next_power_of_2(ch)))
        # stream: segments of SEG tokens (a multiple of BLOCK_T; no longer than the sequence needs)
        seg = min(cfg["SEG"], triton.cdiv(t, bt) * bt) if stream else bt
        nt = triton.cdiv(t, seg)
        dw_part = _empty(b * nt, ch, k, like=x, dtype=torch.float32)
        db_part = _empty(b * nt, ch, like=x, dtype=torch.float32) if bias is not None else dw_part
        args = (x, w, bias if bias is not None else w, dy, dx, dw_part, db_part, t, ch)
        strides = (*x.stride(), *dy.stride(), *dx.stride())
        meta = dict(K=k, BLOCK_T=bt, BLOCK_C=bc, HAS_BIAS=bias is not None, ACT=ctx.activation, num_warps=cfg["num_warps"])
        if stream:
            conv_bwd_stream_kernel[(nt, triton.cdiv(ch, bc), b)](*args, seg, *strides, **meta)
        else:
            conv_bwd_kernel[(nt, triton.cdiv(ch, bc), b)](*args, *strides, **meta)
        dw = dw_part.sum(0).reshape(ctx.w_shape).to(ctx.w_dtype)
        db = db_part.sum(0).to(bias.dtype) if bias is not None else None
        return dx, dw, db, None, None


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: bool = True,
                  dx_into=None) -> Tensor:
    """Depthwise causal conv over time (+ SiLU), Triton. x (batch, seqlen, channels);
    weight (channels, K) (an nn.Conv1d weight (channels, 1, K) works too); bias (channels,)
    or None -> y (batch, seqlen, channels) in x's dtype. dx_into: a `kernels.slab.GradSlab` part
    that x's gradient is written into (x a piece of the slab's split), or None."""
    assert x.is_cuda or _INTERPRET, "the Triton conv needs CUDA tensors"
    ch = x.shape[-1]
    assert weight.numel() % ch == 0 and weight.shape[0] == ch, f"weight must be (channels={ch}, K), got {tuple(weight.shape)}"
    return CausalConv1d.apply(x, weight, bias, activation, dx_into)

"""Autograd op of the Triton diversity loss (kernels in `kernel.py`).

    diversity_loss(slot_outputs) -> scalar fp32

slot_outputs: (..., H, P) in fp32/bf16/fp16, any leading dims -> the mean over all rows and
(i, j) of (<ŷ_i, ŷ_j> - δ_ij)^2, ŷ = y / max(||y||, 1e-12). Same function as
`reference.diversity_loss_ref`. Reads the input once forward and once backward; the gradient
is formed in the backward from the input (nothing of the input's size is stored).
"""

from __future__ import annotations

import os

import torch
import triton
from torch import Tensor

from .._buffers import empty as _empty
from .kernel import diversity_bwd_kernel, diversity_fwd_kernel

# rows per program, warps, the products' precision (kernel.py) for fp32 inputs ("dot": "ieee" or
# "tf32x3"; H100 sweep) and for bf16 / fp16 ones ("dot_low": also "tf32", whose 10-bit mantissa
# holds an 8-bit input's products to ~5e-4, with num_warps_low): `benchmarks/diversity.py
# --sweep` on an H200 (docs/benchmarks.md section 9): bf16 slots (8, 2048, 16, 64), tf32 at 4
# warps 0.024 / 0.044 ms forward / backward against 0.068 / 0.116 for ieee, loss within 1.4e-3
CONFIG = {"BLOCK_R": 4, "num_warps": 2, "dot": "ieee", "dot_low": "tf32", "num_warps_low": 4}
EPS = 1e-12  # F.normalize's default
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _launch(y: Tensor) -> dict:
    """The products' precision and the warps for y's dtype (CONFIG)."""
    low = y.dtype != torch.float32
    dot = CONFIG.get("dot_low", CONFIG["dot"]) if low else CONFIG["dot"]
    warps = CONFIG.get("num_warps_low", CONFIG["num_warps"]) if low else CONFIG["num_warps"]
    return {"DOT": "ieee" if _INTERPRET else dot, "num_warps": warps}  # (the interpreter: every dot in fp32)


def _rows(y: Tensor) -> Tensor:
    """(..., H, P) -> (rows, H, P) with a unit stride along P (a view when possible)."""
    y = y.reshape(-1, *y.shape[-2:])
    return y if y.stride(-1) == 1 else y.contiguous()


def _blocks(h: int, p: int) -> tuple[int, int]:
    return max(16, triton.next_power_of_2(h)), max(16, triton.next_power_of_2(p))


class DiversityLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, grad_to):
        yr = _rows(y)
        rows, h, p = yr.shape
        bh, bp = _blocks(h, p)
        br = CONFIG["BLOCK_R"]
        part = _empty(triton.cdiv(rows, br), like=yr, dtype=torch.float32)
        if rows:
            diversity_fwd_kernel[(triton.cdiv(rows, br),)](
                yr, part, rows, h, p, yr.stride(0), yr.stride(1), EPS,
                BLOCK_R=br, BLOCK_H=bh, BLOCK_P=bp, **_launch(yr),
            )
        ctx.save_for_backward(yr)
        ctx.y_shape, ctx.grad_to = y.shape, grad_to
        return part.sum() / (rows * h * h)  # rows = 0: nan, as the mean of nothing

    @staticmethod
    def backward(ctx, g):
        (yr,) = ctx.saved_tensors
        rows, h, p = yr.shape
        dy = _empty(rows, h, p, like=yr)
        bh, bp = _blocks(h, p)
        scale = (g.float() * 4.0 / max(rows * h * h, 1)).reshape(1).contiguous()
        br = CONFIG["BLOCK_R"]
        if rows:
            diversity_bwd_kernel[(triton.cdiv(rows, br),)](
                yr, dy, scale, rows, h, p, yr.stride(0), yr.stride(1), dy.stride(0), dy.stride(1), EPS,
                BLOCK_R=br, BLOCK_H=bh, BLOCK_P=bp, **_launch(yr),
            )
        if ctx.grad_to is not None:  # (added by the backward of the norm that made y)
            ctx.grad_to.put(dy.reshape(ctx.y_shape))
            return None, None
        return dy.reshape(ctx.y_shape), None


def diversity_loss(slot_outputs: Tensor, grad_to=None) -> Tensor:
    """Triton diversity loss; shapes in the module docstring. grad_to: a holder with put(g)
    (`kernels.norm.op.GradHolder`) that receives the gradient instead of autograd."""
    assert slot_outputs.is_cuda or _INTERPRET, "the Triton diversity loss needs CUDA tensors"
    assert slot_outputs.dim() >= 2, f"slot_outputs must be (..., H, P), got {tuple(slot_outputs.shape)}"
    assert slot_outputs.dtype in (torch.float32, torch.bfloat16, torch.float16), f"fp32/bf16/fp16 only, got {slot_outputs.dtype}"
    return DiversityLoss.apply(slot_outputs, grad_to)

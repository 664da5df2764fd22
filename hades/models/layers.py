"""Building blocks shared by every token mixer: norms, the short causal conv, the MLP.

Each lives here once; mixers import them instead of re-writing them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernels.norm import gated_rms_norm, grad_holder, residual_grad, rms_norm


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        # Fast path (set by the LM from cfg.kernel): the fused Triton norm of kernels/norm on CUDA,
        # one kernel per direction instead of ~10 fp32 elementwise kernels forward, ~20 backward.
        self.use_kernel = False

    def residual_grad(self, x: Tensor):
        """The holder that fuses a pre-norm block's residual gradient into this norm's backward
        kernel (`kernels.norm.residual_grad`), or None (the reference path; no gradient taken)."""
        if self.use_kernel and x.is_cuda and torch.is_grad_enabled() and x.requires_grad:
            return residual_grad(x, self.weight)
        return None

    def forward(self, x: Tensor, residual=None) -> Tensor:
        if self.use_kernel and x.is_cuda:
            return rms_norm(x, self.weight, self.eps, residual=residual)
        assert residual is None, "residual: the kernel path's (RMSNorm.residual_grad)"
        # fp32 statistics for half-precision activations; fp64 stays fp64 (tight reference tests)
        ct = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(ct)
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(ct)).to(x.dtype)


class GatedRMSNorm(nn.Module):
    """Mamba2's gated norm with norm_before_gate=False: RMSNorm(y * silu(z)) (docs/paper.md
    "The HADES mixer", step 8).

    `group_size` normalises over groups of that many channels (Mamba2 uses one group per
    n_groups; None = the whole width).
    """

    def __init__(self, dim: int, eps: float = 1e-5, group_size: int | None = None):
        super().__init__()
        self.eps = eps
        self.group_size = group_size or dim
        self.weight = nn.Parameter(torch.ones(dim))
        self.use_kernel = False  # fast path as RMSNorm's: the fused Triton gated norm of kernels/norm

    def grad_holder(self, y: Tensor, z: Tensor):
        """A holder for a second consumer's gradient of this norm's output, added inside the
        fused backward kernel (`kernels.norm.grad_holder`), or None where the kernel is not used."""
        if self.use_kernel and y.is_cuda and torch.is_grad_enabled():
            return grad_holder(y, z, self.weight, self.group_size)
        return None

    def forward(self, y: Tensor, z: Tensor, dz_into=None, dout_extra=None) -> Tensor:
        """dz_into: a `kernels.slab.GradSlab` part for z's gradient (the fused kernel's), or None;
        dout_extra: a `grad_holder`'s holder (the fused kernel's), or None."""
        if self.use_kernel and y.is_cuda:
            return gated_rms_norm(y, z, self.weight, self.eps, self.group_size, dz_into=dz_into,
                                  dout_extra=dout_extra)
        assert dout_extra is None, "dout_extra is for the fused kernel (grad_holder gives None elsewhere)"
        dtype = y.dtype
        ct = torch.promote_types(dtype, torch.float32)  # fp64 stays fp64
        h = y.to(ct) * F.silu(z.to(ct))
        g = h.unflatten(-1, (-1, self.group_size))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return (g.flatten(-2) * self.weight.to(ct)).to(dtype)


class ShortConv(nn.Module):
    """Depthwise causal conv over time (kernel d_conv), optional SiLU, with a decode state.

    forward: x (B, T, C) -> (B, T, C); final state = the last d_conv-1 inputs, (B, C, d_conv-1)
    step:    x (B, C), state (B, C, d_conv-1) -> (B, C), new state
    """

    def __init__(self, channels: int, d_conv: int = 4, activation: bool = True, bias: bool = True):
        super().__init__()
        self.d_conv = d_conv
        self.activation = activation
        self.conv = nn.Conv1d(channels, channels, d_conv, groups=channels, padding=d_conv - 1, bias=bias)
        # Fast path (set by the LM from cfg.kernel): the fused Triton conv + SiLU of kernels/conv on
        # CUDA, 3-8x faster than nn.Conv1d + SiLU on the H100 (docs/benchmarks.md).
        self.use_kernel = False

    def forward(self, x: Tensor, return_state: bool = False, dx_into=None) -> tuple[Tensor, Tensor | None]:
        """dx_into: a `kernels.slab.GradSlab` part for x's gradient (the Triton conv's), or None."""
        T = x.shape[1]
        xt = x.transpose(1, 2)  # (B, C, T)
        if self.use_kernel and x.is_cuda:
            from kernels.conv import causal_conv1d

            y = causal_conv1d(x, self.conv.weight, self.conv.bias, self.activation, dx_into=dx_into)
        else:
            y = self.conv(xt)[..., :T].transpose(1, 2)
            if self.activation:
                y = F.silu(y)
        state = None
        if return_state:
            k = self.d_conv - 1
            state = F.pad(xt, (max(0, k - T), 0))[..., -k:].contiguous() if k > 0 else xt[..., :0]
        return y, state

    def init_state(self, batch_size: int, channels: int, device, dtype) -> Tensor:
        return torch.zeros(batch_size, channels, self.d_conv - 1, device=device, dtype=dtype)

    def step(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        window = torch.cat([state, x.unsqueeze(-1)], dim=-1)  # (B, C, d_conv)
        w = self.conv.weight.squeeze(1)  # (C, d_conv)
        y = (window * w).sum(-1)
        if self.conv.bias is not None:
            y = y + self.conv.bias
        if self.activation:
            y = F.silu(y)
        return y, window[..., 1:]


class SwiGLU(nn.Module):
    """The MLP of fla's attention-style blocks: hidden = round_up(2/3 * ratio * D, 256)."""

    def __init__(self, d_model: int, ratio: float):
        super().__init__()
        hidden = int(2 * ratio * d_model / 3)
        hidden = 256 * ((hidden + 255) // 256) if d_model >= 256 else max(8, 8 * ((hidden + 7) // 8))
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

"""Mamba (S6) token mixer: Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective
State Spaces", Section 3 / Algorithm 2; the layer definition of mamba_ssm's `Mamba` and fla's
`fla.layers.mamba.Mamba`.

    x, z  = in_proj(u)                           D -> 2 * d_inner        (d_inner = expand * D)
    x     = silu(causal depthwise conv(x))       kernel d_conv
    dt, B, C = x_proj(x)                         d_inner -> dt_rank + 2N
    delta = softplus(dt_proj(dt))                dt_rank -> d_inner, bias = inverse softplus init
    y     = selective_scan(x, delta, A = -exp(A_log), B, C, D)   A: (d_inner, N), diagonal
    out   = out_proj(y * silu(z))

The decay is per channel AND state index (A is d_inner x N), unlike Mamba2's scalar per head.
Reference path: `kernels.selective_scan.selective_scan_chunked`; fast path: the public
`kernels.selective_scan.selective_scan` (Triton on CUDA), which takes dt_proj's output before
its bias and softplus and applies both inside its kernels (as mamba_ssm's delta_bias /
delta_softplus: no fp32 (batch, seqlen, d_inner) time step in memory), the gate
`kernels.gate.silu_gate`, and x's and z's gradients written into one `kernels.slab.GradSlab`
(the conv's and the gate's backwards: no concatenation after the in-projection); decode: one
`selective_scan_step`. Every path computes delta = softplus(dt_proj(dt) + bias) in fp32 from the
same rounded product (`kernels.selective_scan.delta_activation`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hades.config import ModelConfig
from kernels.gate import silu_gate
from kernels.selective_scan import (
    delta_activation,
    selective_scan,
    selective_scan_chunked,
    selective_scan_step,
)

from ..layers import ShortConv
from .base import Mixer, MixerOutput, State
from .ssm_init import sample_dt_bias


class Mamba(Mixer):
    """S6 mixer. u: (batch, seqlen, d_model) -> (batch, seqlen, d_model).

    Decode state: {"conv": (batch, d_inner, d_conv - 1), "ssm": (batch, d_inner, d_state)}.
    """
    arch = "mamba"  # the id a config names (hades/archs.py finds it here)
    # False: the fast path's time step, gate and split in plain torch around the Triton scan (the
    # fusion's before, for `benchmarks.train_throughput --mamba-unfused`; same function)
    fused_glue = True


    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__(cfg, layer_idx)
        self.d_inner = cfg.expand * cfg.d_model
        self.d_state = cfg.d_state
        self.dt_rank = cfg.dt_rank or math.ceil(cfg.d_model / 16)
        self.in_proj = nn.Linear(cfg.d_model, 2 * self.d_inner, bias=False)
        self.conv = ShortConv(self.d_inner, cfg.d_conv, activation=True, bias=True)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, self.d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, cfg.d_model, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        self.conv.conv.reset_parameters()  # PyTorch's default conv init, as mamba_ssm keeps it
        # dt_proj: uniform(+-dt_rank^-0.5) so that dt_proj(dt) has unit-order variance at init
        # ("dt_init = random", dt_scale = 1), bias = inverse softplus of the sampled time steps.
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        self.dt_proj.bias.copy_(sample_dt_bias((self.d_inner,), self.cfg, self.dt_proj.bias.device))
        # S4D-real: A[c, n] = -(n + 1) for every channel.
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(torch.log(A).expand(self.d_inner, -1))
        self.D.fill_(1.0)

    def no_weight_decay(self) -> set[str]:
        return {"A_log", "D", "dt_proj.bias"}

    def _ssm_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (..., d_inner) after the conv -> dt (..., d_inner), the time step before dt_proj's
        bias and softplus (in x's dtype under autocast), B, C (..., d_state)."""
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C

    def _delta(self, dt: Tensor) -> Tensor:
        """softplus(dt + bias) in fp32, as the CUDA kernel does (delta_bias): under bf16 autocast
        a bf16 bias add would quantise small time steps."""
        return delta_activation(dt, self.dt_proj.bias, softplus=True)

    def forward(self, u: Tensor, return_state: bool = False) -> MixerOutput:
        xz = self.in_proj(u)
        fused = self.use_fast_path(xz) and self.fused_glue
        slab = self.grad_slab(xz, [self.d_inner, self.d_inner]) if fused else None  # (x's, z's gradients in place)
        x, z = slab.split(xz) if slab is not None else xz.chunk(2, dim=-1)  # (b, t, d_inner) each
        x, conv_state = self.conv(x, return_state=return_state, dx_into=slab and slab.part(0))
        dt, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        if fused:  # the bias and softplus inside the scan's kernels, the gate fused
            y, ssm_state = selective_scan(x, dt, A, B, C, self.D.float(), chunk_size=self.cfg.chunk_size,
                                          delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
            out = self.out_proj(silu_gate(y, z, dz_into=slab and slab.part(1)))
        else:
            scan = selective_scan if self.use_fast_path(x) else selective_scan_chunked
            y, ssm_state = scan(x, self._delta(dt), A, B, C, self.D.float(), chunk_size=self.cfg.chunk_size)
            out = self.out_proj(y * F.silu(z))
        state = {"conv": conv_state, "ssm": ssm_state} if return_state else None
        return MixerOutput(out, {}, state)

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        ssm_dtype = torch.promote_types(dtype, torch.float32)  # the scan runs in >= fp32
        return {
            "conv": self.conv.init_state(batch_size, self.d_inner, device, dtype),
            "ssm": torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=ssm_dtype),
        }

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (b, d_inner) each
        x, conv_state = self.conv.step(x, state["conv"])
        dt, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        y, ssm_state = selective_scan_step(state["ssm"], x, self._delta(dt), A, B, C, self.D.float())
        return self.out_proj(y * F.silu(z)), {"conv": conv_state, "ssm": ssm_state}

"""Mamba2 (SSD) token mixer: Dao & Gu 2024, "Transformers are SSMs", Section 7 (the Mamba-2
block); the layer definition of mamba_ssm's `Mamba2` and fla's `fla.layers.mamba2.Mamba2`
(HADES paper, Appendix: "Full Mamba2 Architecture").

    z, xBC, dt = in_proj(u)               D -> d_inner + (d_inner + 2 G N) + nheads
    x, B, C    = silu(causal depthwise conv(xBC))       conv over [x, B, C], kernel d_conv
    dt         = softplus(dt + dt_bias)                 per head
    y          = SSD(x, dt, A = -exp(A_log), B, C, D)   A, D: one scalar per head
    out        = out_proj(RMSNorm(y * silu(z)))         gated norm, norm_before_gate = False

with d_inner = expand * D, nheads = d_inner / head_dim, G = n_groups heads-groups sharing B, C.
Reference path: `kernels.ssd.ssd_chunked`; fast path: the public `kernels.ssd.ssd_scan`
(Triton on CUDA); decode: one `ssd_step`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from hades.config import ModelConfig
from kernels.ssd import ssd_chunked, ssd_scan, ssd_step

from ..layers import GatedRMSNorm, ShortConv
from .base import Mixer, MixerOutput, State
from .ssm_init import sample_A_log, sample_dt_bias


class Mamba2(Mixer):
    """SSD mixer. u: (batch, seqlen, d_model) -> (batch, seqlen, d_model).

    Decode state: {"conv": (batch, d_inner + 2 G N, d_conv - 1),
                   "ssm": (batch, nheads, head_dim, d_state)}.
    """
    arch = "mamba2"  # the id a config names (hades/archs.py finds it here)


    rescale_out_proj_init = True  # fla's Mamba2: rescale_prenorm_residual=True

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__(cfg, layer_idx)
        self.d_inner = cfg.expand * cfg.d_model
        self.head_dim = cfg.head_dim
        self.n_heads = self.d_inner // cfg.head_dim
        self.n_groups = cfg.n_groups
        self.d_state = cfg.d_state
        assert self.n_heads * self.head_dim == self.d_inner, (
            f"head_dim {cfg.head_dim} must divide expand * d_model = {self.d_inner}"
        )
        assert self.n_heads % self.n_groups == 0, f"n_groups {self.n_groups} must divide nheads {self.n_heads}"
        gn = self.n_groups * self.d_state
        self.in_proj = nn.Linear(cfg.d_model, 2 * self.d_inner + 2 * gn + self.n_heads, bias=False)
        self.conv = ShortConv(self.d_inner + 2 * gn, cfg.d_conv, activation=True, bias=True)
        self.dt_bias = nn.Parameter(torch.empty(self.n_heads))
        self.A_log = nn.Parameter(torch.empty(self.n_heads))
        self.D = nn.Parameter(torch.empty(self.n_heads))
        self.norm = GatedRMSNorm(self.d_inner, cfg.norm_eps, group_size=self.d_inner // self.n_groups)
        self.out_proj = nn.Linear(self.d_inner, cfg.d_model, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        self.conv.conv.reset_parameters()  # PyTorch's default conv init (mamba_ssm: conv_init=None)
        self.dt_bias.copy_(sample_dt_bias((self.n_heads,), self.cfg, self.dt_bias.device))
        self.A_log.copy_(sample_A_log(self.n_heads, self.A_log.device))
        self.D.fill_(1.0)
        self.norm.weight.fill_(1.0)

    def no_weight_decay(self) -> set[str]:
        return {"A_log", "D", "dt_bias"}

    def _sizes(self) -> list[int]:
        gn = self.n_groups * self.d_state
        return [self.d_inner, self.d_inner + 2 * gn, self.n_heads]

    def _split(self, zxbcdt: Tensor, slab=None) -> tuple[Tensor, Tensor, Tensor]:
        """(..., in_proj width) -> z (..., d_inner), xBC (..., conv channels), dt (..., nheads);
        slab: the `grad_slab` of zxbcdt, or None."""
        return slab.split(zxbcdt) if slab is not None else torch.split(zxbcdt, self._sizes(), dim=-1)

    def _ssm_inputs(self, xBC: Tensor, dt: Tensor, slab=None):
        """(..., conv channels), (..., nheads) -> x (..., nheads, head_dim), B, C
        (..., n_groups, d_state), dt (..., nheads) in fp32 after softplus; slab: xBC's, or None."""
        gn = self.n_groups * self.d_state
        x, B, C = slab.split(xBC) if slab is not None else torch.split(xBC, [self.d_inner, gn, gn], dim=-1)
        x = rearrange(x, "... (h p) -> ... h p", p=self.head_dim)
        B = rearrange(B, "... (g n) -> ... g n", g=self.n_groups)
        C = rearrange(C, "... (g n) -> ... g n", g=self.n_groups)
        # dt_bias added and softplus taken in fp32, as the Triton kernels do.
        dt = F.softplus(dt.float() + self.dt_bias.float())
        return x, B, C, dt

    def forward(self, u: Tensor, return_state: bool = False) -> MixerOutput:
        zxbcdt = self.in_proj(u)
        slab = self.grad_slab(zxbcdt, self._sizes())  # (the gradients of z, xBC written in place)
        z, xBC, dt = self._split(zxbcdt, slab)
        xBC, conv_state = self.conv(xBC, return_state=return_state, dx_into=slab and slab.part(1))
        gn = self.n_groups * self.d_state
        slab_xbc = self.grad_slab(xBC, [self.d_inner, gn, gn]) if slab is not None else None
        x, B, C, dt = self._ssm_inputs(xBC, dt, slab_xbc)
        A = -torch.exp(self.A_log.float())
        if self.use_fast_path(x):
            into = {"grad_into": slab_xbc.parts()} if slab_xbc is not None else {}
            y, ssm_state = ssd_scan(x, dt, A, B, C, self.D.float(), chunk_size=self.cfg.chunk_size, **into)
        else:
            y, ssm_state = ssd_chunked(x, dt, A, B, C, self.D.float(), chunk_size=self.cfg.chunk_size)
        y = self.norm(rearrange(y, "b t h p -> b t (h p)"), z, dz_into=slab and slab.part(0))
        state = {"conv": conv_state, "ssm": ssm_state} if return_state else None
        return MixerOutput(self.out_proj(y), {}, state)

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        ssm_dtype = torch.promote_types(dtype, torch.float32)  # the scan runs in >= fp32
        conv_dim = self.d_inner + 2 * self.n_groups * self.d_state
        return {
            "conv": self.conv.init_state(batch_size, conv_dim, device, dtype),
            "ssm": torch.zeros(
                batch_size, self.n_heads, self.head_dim, self.d_state, device=device, dtype=ssm_dtype
            ),
        }

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        z, xBC, dt = self._split(self.in_proj(u))
        xBC, conv_state = self.conv.step(xBC, state["conv"])
        x, B, C, dt = self._ssm_inputs(xBC, dt)
        A = -torch.exp(self.A_log.float())
        y, ssm_state = ssd_step(state["ssm"], x, dt, A, B, C, self.D.float())
        y = self.norm(rearrange(y, "b h p -> b (h p)"), z)
        return self.out_proj(y), {"conv": conv_state, "ssm": ssm_state}

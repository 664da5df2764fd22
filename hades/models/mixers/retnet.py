"""Multi-scale retention (Sun et al. 2023, "Retentive Network", §2.2), the `retnet` grid id.

Mirrors fla 0.6.0 `fla.layers.multiscale_retention.MultiScaleRetention` as
`fla.models.RetNetConfig` builds it by default (`fla_layer_kwargs` lists the options):

    q, k = RoPE(W_q u), RoPE(W_k u)      key width D (expand_k=1), head_k = D / num_heads;
                                         rotary on the full head, GPT-NeoX (half-split) layout,
                                         base 10000, positions counted from the sequence start
    v    = W_v u                         value width 2D (expand_v=2), head_v = 2D / num_heads
    o_t  = scale · Σ_{s≤t} γ_h^{t−s} (q_t·k_s) v_s      scale = head_k^-1/2
    γ_h  = 1 − 2^(−5−h), h = 0 … num_heads−1 (fixed per-head decays: the "multi-scale")
    y    = W_o (RMSNorm_per_head(o) ⊙ silu(W_g u))      fla's fused gated norm: normalise, then
                                                         gate (swish), per head over head_v

No short convolution, no feature map (fla's defaults). Recurrent form: S_t = γ_h S_{t−1} +
k_t v_tᵀ, state (B, H, K, V), plus the position counter the rotary embedding needs in decoding.

Compute paths: reference = `kernels.linear_attn.linear_attn_chunked` with log γ (plain torch);
fast (CUDA, cfg.kernel == "auto") = fla's `chunk_retention` (the same γ_h); decode =
`linear_attn_step`.

Initialisation as fla's `FLAPreTrainedModel._init_weights`: every Linear weight ~ N(0,
initializer_range), norm weight 1; nothing is learned in the decays.

Weight names are fla's: `q_proj, k_proj, v_proj, g_proj, o_proj, g_norm_swish_gate.weight`
(`FLA_RENAMES` is empty). fla's rotary tables are non-persistent buffers and ours are computed
on the fly, so neither state dict holds them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from hades.config import ModelConfig
from kernels.linear_attn import linear_attn_chunked, linear_attn_step

from ..layers import RMSNorm
from .base import Mixer, MixerOutput, State

EXPAND_K = 1  # fla's MultiScaleRetention defaults
EXPAND_V = 2
ROPE_BASE = 10000.0

FLA_RENAMES: dict[str, str] = {}


def fla_layer_kwargs(cfg: ModelConfig) -> dict:
    """Keyword arguments that build fla's MultiScaleRetention with the options mirrored here."""
    return dict(
        mode="chunk",
        hidden_size=cfg.d_model,
        expand_k=float(EXPAND_K),
        expand_v=float(EXPAND_V),
        num_heads=cfg.num_heads,
        feature_map=None,
        use_short_conv=False,
        use_output_gate=True,
        gate_fn="swish",
        elementwise_affine=True,
        norm_eps=cfg.norm_eps,
        fuse_norm=True,
    )


def to_fla_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return {FLA_RENAMES.get(k, k): v for k, v in sd.items()}


def from_fla_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    inverse = {v: k for k, v in FLA_RENAMES.items()}
    return {inverse.get(k, k): v for k, v in sd.items()}


def retention_log_decay(num_heads: int, device=None) -> Tensor:
    """log γ_h = log(1 − 2^(−5−h)): (H,) fp32, as fla's chunk_retention computes it."""
    h = torch.arange(num_heads, dtype=torch.float32, device=device)
    return torch.log1p(-torch.exp2(-5.0 - h))


def apply_rotary(x: Tensor, positions: Tensor) -> Tensor:
    """Rotary embedding, half-split layout (fla's interleaved=False).

    x: (B, T, H, d); positions: (T,) or (B, T), integer -> (B, T, H, d). Angles in fp32, then
    cos/sin cast to x's dtype (as fla's kernel does).
    """
    d = x.shape[-1]
    inv_freq = 1.0 / ROPE_BASE ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (..., T, d/2)
    angles = torch.cat([angles, angles], dim=-1)[..., None, :]  # (..., T, 1, d)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class MultiScaleRetention(Mixer):
    arch = "retnet"  # the id a config names (hades/archs.py finds it here)

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__(cfg, layer_idx)
        D, H = cfg.d_model, cfg.num_heads
        key_dim, value_dim = D * EXPAND_K, D * EXPAND_V
        assert key_dim % H == 0 and value_dim % H == 0, (
            f"num_heads={H} must divide key_dim={key_dim} and value_dim={value_dim}"
        )
        self.num_heads = H
        self.head_k_dim = key_dim // H
        self.head_v_dim = value_dim // H
        assert self.head_k_dim % 2 == 0, f"rotary needs an even head_k_dim, got {self.head_k_dim}"
        self.scale = self.head_k_dim**-0.5

        self.q_proj = nn.Linear(D, key_dim, bias=False)
        self.k_proj = nn.Linear(D, key_dim, bias=False)
        self.v_proj = nn.Linear(D, value_dim, bias=False)
        self.g_proj = nn.Linear(D, value_dim, bias=False)
        self.g_norm_swish_gate = RMSNorm(self.head_v_dim, cfg.norm_eps)
        self.o_proj = nn.Linear(value_dim, D, bias=False)

    def _qkv(self, u: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """u (B, T, D), positions (T,) or (B, T) -> q, k (B, T, H, K) rotated; v (B, T, H, V)."""
        q = rearrange(self.q_proj(u), "b t (h d) -> b t h d", h=self.num_heads)
        k = rearrange(self.k_proj(u), "b t (h d) -> b t h d", h=self.num_heads)
        v = rearrange(self.v_proj(u), "b t (h d) -> b t h d", h=self.num_heads)
        return apply_rotary(q, positions), apply_rotary(k, positions), v

    def _out(self, o: Tensor, u: Tensor) -> Tensor:
        """o (..., H, V), u (..., D) -> (..., D): norm, then swish gate, in fp32 at least."""
        g = rearrange(self.g_proj(u), "... (h d) -> ... h d", h=self.num_heads)
        ct = torch.promote_types(o.dtype, torch.float32)
        o = (self.g_norm_swish_gate(o).to(ct) * F.silu(g.to(ct))).to(o.dtype)
        return self.o_proj(rearrange(o, "... h d -> ... (h d)"))

    def forward(self, u: Tensor, return_state: bool = False) -> MixerOutput:
        """u: (B, T, D) -> y: (B, T, D); state {"S": (B, H, K, V), "offset": (B,) int64}."""
        B, T, _ = u.shape
        q, k, v = self._qkv(u, torch.arange(T, device=u.device))
        if self.use_fast_path(q):
            from fla.ops.retention import chunk_retention

            o, S = chunk_retention(q, k, v, scale=self.scale, output_final_state=return_state)
        else:
            log_decay = retention_log_decay(self.num_heads, u.device)
            o, S = linear_attn_chunked(q, k, v, self.scale, log_decay, chunk_size=self.cfg.chunk_size)
        state = None
        if return_state:
            state = {"S": S, "offset": torch.full((B,), T, dtype=torch.long, device=u.device)}
        return MixerOutput(self._out(o, u), {}, state)

    def init_state(self, batch_size: int, device, dtype) -> State:
        sdt = torch.promote_types(dtype, torch.float32)
        S = torch.zeros(batch_size, self.num_heads, self.head_k_dim, self.head_v_dim, device=device, dtype=sdt)
        return {"S": S, "offset": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        offset = state["offset"]
        q, k, v = self._qkv(u[:, None], offset[:, None])
        log_decay = retention_log_decay(self.num_heads, u.device)
        o, S = linear_attn_step(q[:, 0], k[:, 0], v[:, 0], state["S"], self.scale, log_decay)
        return self._out(o, u), {"S": S, "offset": offset + 1}

    @torch.no_grad()
    def init_weights(self) -> None:
        nn.init.ones_(self.g_norm_swish_gate.weight)

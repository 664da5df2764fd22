"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"), the `linear_attn` grid id.

Mirrors fla 0.6.0 `fla.layers.linear_attn.LinearAttention` as `fla.models.LinearAttentionConfig`
builds it by default (`fla_layer_kwargs` lists the options):

    q, k, v = W_q u, W_k u, W_v u              split into num_heads heads of D / num_heads
    φ(x)    = layer1(x) ⊙ layer2(x)            fla's default feature map 'elementwise_product'
                                               (HadamardFeatureMap: two Linear(d, d) with bias,
                                               shared by the heads, one map for q and one for k)
    o_t     = scale · Σ_{s≤t} (φ(q_t)·φ(k_s)) v_s      scale = head_dim^-1/2; no denominator
                                               (fla's default do_feature_map_norm=False)
    y       = W_o · RMSNorm_per_head(o)        fla's output_norm='rmsnorm' over head_dim

So the kernelised causal attention of Katharopoulos et al. is kept, but with fla's learned
Hadamard feature map and output RMSNorm instead of elu+1 and the Σφ(q)·φ(k) denominator: the
paper's baselines follow fla's layer definitions (docs/paper.md "The experiment grid").
Recurrent form: S_t = S_{t−1} + φ(k_t) v_tᵀ, o_t = scale · S_tᵀ φ(q_t) (state (B, H, K, V), no decay).

Compute paths: reference = `kernels.linear_attn.linear_attn_chunked` (plain torch); fast (CUDA,
cfg.kernel == "auto") = fla's `chunk_linear_attn(normalize=False)`; decode =
`kernels.linear_attn.linear_attn_step`.

Initialisation as fla's `FLAPreTrainedModel._init_weights`: every Linear weight (projections
and the feature map layers) ~ N(0, initializer_range), biases 0, norm weights 1.

Weight names are fla's: `q_proj, k_proj, v_proj, feature_map_q.layer1/.layer2 (weight, bias),
feature_map_k.layer1/.layer2, norm.weight, o_proj` -- `FLA_RENAMES` is empty and
`to_fla_state_dict`/`from_fla_state_dict` are the identity (kept for a uniform parity test).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from hades.config import ModelConfig
from kernels.linear_attn import linear_attn_chunked, linear_attn_step

from ..layers import RMSNorm
from .base import Mixer, MixerOutput, State

EXPAND_K = 1  # fla's LinearAttention defaults: key and value width = d_model
EXPAND_V = 1

# our parameter name -> fla's (within the layer); empty: the names already agree
FLA_RENAMES: dict[str, str] = {}


def fla_layer_kwargs(cfg: ModelConfig) -> dict:
    """Keyword arguments that build fla's LinearAttention with the options mirrored here."""
    return dict(
        mode="chunk",
        hidden_size=cfg.d_model,
        expand_k=float(EXPAND_K),
        expand_v=float(EXPAND_V),
        num_heads=cfg.num_heads,
        feature_map="elementwise_product",
        tie_feature_map_qk=False,
        output_norm="rmsnorm",
        norm_q=False,
        norm_k=False,
        do_feature_map_norm=False,
        elementwise_affine=True,
        norm_eps=cfg.norm_eps,
    )


def to_fla_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return {FLA_RENAMES.get(k, k): v for k, v in sd.items()}


def from_fla_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    inverse = {v: k for k, v in FLA_RENAMES.items()}
    return {inverse.get(k, k): v for k, v in sd.items()}


class HadamardFeatureMap(nn.Module):
    """φ(x) = layer1(x) ⊙ layer2(x): x (..., d) -> (..., d), weights shared over heads."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.layer1 = nn.Linear(head_dim, head_dim)
        self.layer2 = nn.Linear(head_dim, head_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer1(x) * self.layer2(x)


class LinearAttention(Mixer):
    arch = "linear_attn"  # the id a config names (hades/archs.py finds it here)

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
        self.scale = self.head_k_dim**-0.5

        self.q_proj = nn.Linear(D, key_dim, bias=False)
        self.k_proj = nn.Linear(D, key_dim, bias=False)
        self.v_proj = nn.Linear(D, value_dim, bias=False)
        self.feature_map_q = HadamardFeatureMap(self.head_k_dim)
        self.feature_map_k = HadamardFeatureMap(self.head_k_dim)
        self.norm = RMSNorm(self.head_v_dim, cfg.norm_eps)
        self.o_proj = nn.Linear(value_dim, D, bias=False)

    def _qkv(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """u (..., D) -> φ(q), φ(k): (..., H, K); v: (..., H, V)."""
        q = rearrange(self.q_proj(u), "... (h d) -> ... h d", h=self.num_heads)
        k = rearrange(self.k_proj(u), "... (h d) -> ... h d", h=self.num_heads)
        v = rearrange(self.v_proj(u), "... (h d) -> ... h d", h=self.num_heads)
        return self.feature_map_q(q), self.feature_map_k(k), v

    def _out(self, o: Tensor) -> Tensor:
        """o (..., H, V) -> (..., D)."""
        return self.o_proj(rearrange(self.norm(o), "... h d -> ... (h d)"))

    def forward(self, u: Tensor, return_state: bool = False) -> MixerOutput:
        """u: (B, T, D) -> y: (B, T, D); state {"S": (B, H, K, V)} with return_state."""
        q, k, v = self._qkv(u)
        if self.use_fast_path(q):
            from fla.ops.linear_attn import chunk_linear_attn

            o, S = chunk_linear_attn(
                q, k, v, scale=self.scale, normalize=False, output_final_state=return_state
            )
        else:
            o, S = linear_attn_chunked(q, k, v, self.scale, chunk_size=self.cfg.chunk_size)
        return MixerOutput(self._out(o), {}, {"S": S} if return_state else None)

    def init_state(self, batch_size: int, device, dtype) -> State:
        # the memory accumulates over the whole context: keep it in fp32 at least
        sdt = torch.promote_types(dtype, torch.float32)
        S = torch.zeros(batch_size, self.num_heads, self.head_k_dim, self.head_v_dim, device=device, dtype=sdt)
        return {"S": S}

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        q, k, v = self._qkv(u)
        o, S = linear_attn_step(q, k, v, state["S"], self.scale)
        return self._out(o), {"S": S}

    @torch.no_grad()
    def init_weights(self) -> None:
        std = self.cfg.initializer_range
        for lin in (self.feature_map_q.layer1, self.feature_map_q.layer2, self.feature_map_k.layer1, self.feature_map_k.layer2):
            nn.init.normal_(lin.weight, std=std)
            nn.init.zeros_(lin.bias)
        nn.init.ones_(self.norm.weight)

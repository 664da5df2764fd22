"""DeltaNet (Schlag et al. 2021; Yang et al. 2024, "Parallelizing Linear Transformers with the
Delta Rule over Sequence Length"), the `deltanet` grid id.

Mirrors fla 0.6.0 `fla.layers.delta_net.DeltaNet` as `fla.models.DeltaNetConfig` builds it by
default (`fla_layer_kwargs` lists the options):

    q, k = L2norm(silu(conv(W_q u))), L2norm(silu(conv(W_k u)))   width D, head_k = D / num_heads
    v    = silu(conv(W_v u))                                      width D (expand_v=1)
    β    = sigmoid(W_b u)                                         one write strength per head
    S_t  = S_{t−1} + β_t k_t (v_t − S_{t−1}ᵀ k_t)ᵀ                  the delta rule
    o_t  = scale · S_tᵀ q_t                                       scale = head_k^-1/2
    y    = W_o · RMSNorm_per_head(o)                              no output gate (use_gate=False)

conv = depthwise causal conv of width d_conv (fla's ShortConvolution, conv_bias=False), one each
for q, k and v. L2norm is x / sqrt(Σx² + 1e-6) (fla applies it inside the kernel,
use_qk_l2norm_in_kernel). The state is the (B, H, K, V) matrix plus the last d_conv−1 inputs of
each conv.

Compute paths: reference = `kernels.delta_rule.delta_rule_chunked` (chunkwise WY form, plain
torch); fast (CUDA, cfg.kernel == "auto", bf16/fp16 activations: fla's kernel refuses fp32) =
fla's `chunk_delta_rule`; decode = `kernels.delta_rule.delta_rule_step`.

Initialisation as fla's `FLAPreTrainedModel._init_weights`: Linear *and* Conv1d weights ~
N(0, initializer_range) (fla's ShortConvolution is an nn.Conv1d), norm weight 1.

Weight names: ours wrap the conv in `layers.ShortConv`, so `q_conv1d.conv.weight` here is fla's
`q_conv1d.weight` (same for k, v); all other names agree (`q_proj, k_proj, v_proj, b_proj,
o_norm.weight, o_proj`). `to_fla_state_dict`/`from_fla_state_dict` apply `FLA_RENAMES`.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from hades.config import ModelConfig
from kernels.delta_rule import delta_rule_chunked, delta_rule_step, l2norm

from ..layers import RMSNorm, ShortConv
from .base import Mixer, MixerOutput, State

EXPAND_K = 1  # fla's DeltaNet defaults
EXPAND_V = 1

FLA_RENAMES: dict[str, str] = {f"{n}_conv1d.conv.weight": f"{n}_conv1d.weight" for n in "qkv"}


def fla_layer_kwargs(cfg: ModelConfig) -> dict:
    """Keyword arguments that build fla's DeltaNet with the options mirrored here."""
    return dict(
        mode="chunk",
        hidden_size=cfg.d_model,
        expand_k=float(EXPAND_K),
        expand_v=float(EXPAND_V),
        num_heads=cfg.num_heads,
        use_beta=True,
        use_gate=False,
        use_short_conv=True,
        conv_size=cfg.d_conv,
        conv_bias=False,
        allow_neg_eigval=False,
        qk_activation="silu",
        qk_norm="l2",
        norm_eps=cfg.norm_eps,
    )


def to_fla_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return {FLA_RENAMES.get(k, k): v for k, v in sd.items()}


def from_fla_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    inverse = {v: k for k, v in FLA_RENAMES.items()}
    return {inverse.get(k, k): v for k, v in sd.items()}


class DeltaNet(Mixer):
    arch = "deltanet"  # the id a config names (hades/archs.py finds it here)

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__(cfg, layer_idx)
        D, H = cfg.d_model, cfg.num_heads
        key_dim, value_dim = D * EXPAND_K, D * EXPAND_V
        assert key_dim % H == 0 and value_dim % H == 0, (
            f"num_heads={H} must divide key_dim={key_dim} and value_dim={value_dim}"
        )
        self.num_heads = H
        self.key_dim, self.value_dim = key_dim, value_dim
        self.head_k_dim = key_dim // H
        self.head_v_dim = value_dim // H
        self.scale = self.head_k_dim**-0.5

        self.q_proj = nn.Linear(D, key_dim, bias=False)
        self.k_proj = nn.Linear(D, key_dim, bias=False)
        self.v_proj = nn.Linear(D, value_dim, bias=False)
        self.b_proj = nn.Linear(D, H, bias=False)
        self.q_conv1d = ShortConv(key_dim, cfg.d_conv, activation=True, bias=False)
        self.k_conv1d = ShortConv(key_dim, cfg.d_conv, activation=True, bias=False)
        self.v_conv1d = ShortConv(value_dim, cfg.d_conv, activation=True, bias=False)
        self.o_norm = RMSNorm(self.head_v_dim, cfg.norm_eps)
        self.o_proj = nn.Linear(value_dim, D, bias=False)

    def use_fast_path(self, x: Tensor) -> bool:
        # fla's chunk_delta_rule asserts on fp32 inputs; fp32 runs (e.g. tests on GPU) use the reference
        return super().use_fast_path(x) and x.dtype in (torch.bfloat16, torch.float16)

    def _heads(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        split = "... (h d) -> ... h d"
        return (rearrange(x, split, h=self.num_heads) for x in (q, k, v))

    def _out(self, o: Tensor) -> Tensor:
        """o (..., H, V) -> (..., D)."""
        return self.o_proj(rearrange(self.o_norm(o), "... h d -> ... (h d)"))

    def forward(self, u: Tensor, return_state: bool = False) -> MixerOutput:
        """u: (B, T, D) -> y: (B, T, D); state {"S": (B, H, K, V), "conv_q"/"conv_k": (B, key_dim,
        d_conv−1), "conv_v": (B, value_dim, d_conv−1)} with return_state."""
        q, conv_q = self.q_conv1d(self.q_proj(u), return_state)
        k, conv_k = self.k_conv1d(self.k_proj(u), return_state)
        v, conv_v = self.v_conv1d(self.v_proj(u), return_state)
        q, k, v = self._heads(q, k, v)
        beta = self.b_proj(u).sigmoid()  # (B, T, H)
        if self.use_fast_path(q):
            from fla.ops.delta_rule import chunk_delta_rule

            o, S = chunk_delta_rule(
                q, k, v, beta, scale=self.scale, output_final_state=return_state,
                use_qk_l2norm_in_kernel=True,
            )
        else:
            o, S = delta_rule_chunked(
                l2norm(q), l2norm(k), v, beta, self.scale, chunk_size=self.cfg.chunk_size
            )
        state = None
        if return_state:
            state = {"S": S, "conv_q": conv_q, "conv_k": conv_k, "conv_v": conv_v}
        return MixerOutput(self._out(o), {}, state)

    def init_state(self, batch_size: int, device, dtype) -> State:
        sdt = torch.promote_types(dtype, torch.float32)
        S = torch.zeros(batch_size, self.num_heads, self.head_k_dim, self.head_v_dim, device=device, dtype=sdt)
        return {
            "S": S,
            "conv_q": self.q_conv1d.init_state(batch_size, self.key_dim, device, dtype),
            "conv_k": self.k_conv1d.init_state(batch_size, self.key_dim, device, dtype),
            "conv_v": self.v_conv1d.init_state(batch_size, self.value_dim, device, dtype),
        }

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        q, conv_q = self.q_conv1d.step(self.q_proj(u), state["conv_q"])
        k, conv_k = self.k_conv1d.step(self.k_proj(u), state["conv_k"])
        v, conv_v = self.v_conv1d.step(self.v_proj(u), state["conv_v"])
        q, k, v = self._heads(q, k, v)
        beta = self.b_proj(u).sigmoid()
        o, S = delta_rule_step(l2norm(q), l2norm(k), v, beta, state["S"], self.scale)
        return self._out(o), {"S": S, "conv_q": conv_q, "conv_k": conv_k, "conv_v": conv_v}

    @torch.no_grad()
    def init_weights(self) -> None:
        for conv in (self.q_conv1d, self.k_conv1d, self.v_conv1d):
            nn.init.normal_(conv.conv.weight, std=self.cfg.initializer_range)
        nn.init.ones_(self.o_norm.weight)

"""Plain-PyTorch references of linear attention and retention (the linear_attn, retnet mixers).

One recurrence over a matrix-valued state S_t of shape (K, V) per head, with a scalar decay
γ per head (retention; γ = 1 for linear attention):

    S_t = γ · S_{t-1} + k_t v_tᵀ                             o_t = scale · S_tᵀ q_t

It comes as `linear_attn_step` (one token: the decode path), `linear_attn_loop` (repeated
`linear_attn_step`: reads like the equation, the ground truth of the tests) and
`linear_attn_chunked` (what the mixers' reference forward runs). There is no Triton kernel of
ours: fla computes the same op with its Triton kernels (fla.ops.linear_attn / retention), which
the mixers call on CUDA, so these functions stay readable, not fast.

Chunked form (Yang et al. 2024, "Gated Linear Attention Transformers", §2.2): the sequence is
cut into chunks of C tokens; inside a chunk the output is an attention-like masked matmul,
across chunks the state carries the past. No loop at all: the chunk states are a decayed
prefix sum.

Shapes: q, k (B, T, H, K); v (B, T, H, V); S (B, H, K, V); o (B, T, H, V); log_decay (H,) =
log γ ≤ 0 or None. All math runs in fp32 at least (fp64 stays fp64); o is returned in q's
dtype, S in the compute dtype, so a bf16 model decodes from an fp32 state, as fla's kernels
keep it. The delta rule (`kernels/delta_rule`) shares this state layout and these helpers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _zero_state(q: Tensor, v: Tensor, dtype: torch.dtype) -> Tensor:
    B, _, H, K = q.shape
    return q.new_zeros(B, H, K, v.shape[-1], dtype=dtype)


def _pad_time(x: Tensor, pad: int) -> Tensor:
    """Zero-pad dim 1 (time) at the end: x (B, T, ...) -> (B, T + pad, ...)."""
    return F.pad(x, (0, 0) * (x.ndim - 2) + (0, pad)) if pad else x


def linear_attn_step(
    q: Tensor, k: Tensor, v: Tensor, S: Tensor, scale: float, log_decay: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One token. q, k: (B, H, K); v: (B, H, V); S: (B, H, K, V); log_decay: (H,) = log γ ≤ 0
    or None -> o (B, H, V) in q's dtype, new S (in S's dtype)."""
    dt = S.dtype
    if log_decay is not None:
        S = S * log_decay.to(dt).exp()[:, None, None]
    S = S + torch.einsum("bhk,bhv->bhkv", k.to(dt), v.to(dt))
    o = torch.einsum("bhk,bhkv->bhv", q.to(dt) * scale, S)
    return o.to(q.dtype), S


def linear_attn_loop(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float,
    log_decay: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Token-by-token reference: (B, T, H, K/V) -> o (B, T, H, V), final S (B, H, K, V)."""
    dt = _compute_dtype(q)
    S = _zero_state(q, v, dt) if initial_state is None else initial_state.to(dt)
    outs = []
    for t in range(q.shape[1]):
        o, S = linear_attn_step(q[:, t], k[:, t], v[:, t], S, scale, log_decay)
        outs.append(o)
    return torch.stack(outs, dim=1), S


def linear_attn_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float,
    log_decay: Tensor | None = None,
    initial_state: Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """Chunked parallel form, no Python loop. Same contract as `linear_attn_loop`.

    With G_i the log-decay accumulated from the chunk start to token i (inclusive):
      intra-chunk  o_i += Σ_{j≤i} exp(G_i − G_j) (q_i·k_j) v_j
      inter-chunk  o_i += exp(G_i) q_iᵀ S_in           (S_in: the state entering the chunk)
    and the chunk states are a decayed prefix sum of per-chunk summaries, computed for all
    chunks at once with an (n × n) lower-triangular decay matrix.
    """
    B, T, H, K = q.shape
    dt = _compute_dtype(q)
    C = chunk_size
    n = -(-T // C)
    pad = n * C - T
    qc, kc, vc = (
        rearrange(_pad_time(x.to(dt), pad), "b (n c) h d -> b h n c d", c=C) for x in (q, k, v)
    )
    # per-token log-decay; padded tokens get 0 (no decay) and zero k/v, so the state passes
    # through the padding unchanged and the final state is the state after token T
    g = q.new_zeros(n * C, H, dtype=dt)
    if log_decay is not None:
        g = torch.cat([log_decay.to(dt).expand(T, H), g[T:]], dim=0)
    G = rearrange(g, "(n c) h -> h n c", c=C).cumsum(-1)  # (H, n, C)
    G_end = G[..., -1]  # (H, n): log-decay across each whole chunk

    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    decay = (G[..., :, None] - G[..., None, :]).masked_fill(~causal, float("-inf")).exp()
    scores = torch.einsum("bhnik,bhnjk->bhnij", qc, kc) * scale * decay  # (B, H, n, C, C)
    o = scores @ vc

    # summary of chunk m alone: its tokens' k v^T decayed to the chunk end
    dS = torch.einsum("bhnck,bhncv->bhnkv", kc * (G_end[..., None] - G).exp()[..., None], vc)
    L_incl = G_end.cumsum(-1)  # (H, n): log-decay from the sequence start to the end of chunk m
    L_excl = L_incl - G_end  # ... to the start of chunk n
    strict = torch.ones(n, n, dtype=torch.bool, device=q.device).tril(-1)
    W = (L_excl[..., :, None] - L_incl[..., None, :]).masked_fill(~strict, float("-inf")).exp()
    S_in = torch.einsum("hnm,bhmkv->bhnkv", W, dS)  # (B, H, n, K, V)
    S_final = torch.einsum("hm,bhmkv->bhkv", (L_incl[..., -1:] - L_incl).exp(), dS)
    if initial_state is not None:
        S0 = initial_state.to(dt)
        S_in = S_in + L_excl.exp()[None, ..., None, None] * S0[:, :, None]
        S_final = S_final + L_incl[..., -1].exp()[None, :, None, None] * S0

    o = o + torch.einsum("bhnck,bhnkv->bhncv", qc * scale * G.exp()[..., None], S_in)
    o = rearrange(o, "b h n c v -> b (n c) h v")[:, :T]
    return o.to(q.dtype), S_final

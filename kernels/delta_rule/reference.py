"""Plain-PyTorch references of the delta rule (the deltanet mixer).

A recurrence over a matrix-valued state S_t of shape (K, V) per head:

    S_t = S_{t-1} + β_t k_t (v_t − S_{t-1}ᵀ k_t)ᵀ              o_t = scale · S_tᵀ q_t

It comes as `delta_rule_step` (one token: the decode path), `delta_rule_loop` (repeated
`delta_rule_step`: reads like the equation, the ground truth of the tests) and
`delta_rule_chunked` (what the mixer's reference forward runs); `l2norm` is the normalisation
of q and k that the mixer applies first (fla's kernel does it inside, use_qk_l2norm_in_kernel).
There is no Triton kernel of ours: fla computes the same op with its Triton kernels
(fla.ops.delta_rule), which the mixer calls on CUDA, so these functions stay readable, not fast.

Chunked form (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over
Sequence Length", §3): the sequence is cut into chunks of C tokens; inside a chunk the output
is an attention-like masked matmul, across chunks the state carries the past. The chunk state
depends on the previous one through a matrix, so it loops over chunks (T/C iterations, never
tokens).

Shapes: q, k (B, T, H, K); v (B, T, H, V); beta (B, T, H); S (B, H, K, V); o (B, T, H, V).
All math runs in fp32 at least (fp64 stays fp64); o is returned in q's dtype, S in the compute
dtype, as in `kernels/linear_attn` (whose state layout and helpers this shares).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from ..linear_attn.reference import _compute_dtype, _pad_time, _zero_state


def l2norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / sqrt(Σx² + eps) over the last dim, statistics in fp32 (fla's l2norm, eps inside the
    root as its kernel has it)."""
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


def delta_rule_step(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, S: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    """One token. q, k: (B, H, K) (L2-normalised by the caller); v: (B, H, V); beta: (B, H);
    S: (B, H, K, V) -> o (B, H, V) in q's dtype, new S."""
    dt = S.dtype
    k, v = k.to(dt), v.to(dt)
    # the delta rule writes β·(v − Sᵀk): the error of the current memory's prediction for k
    u = beta.to(dt)[..., None] * (v - torch.einsum("bhk,bhkv->bhv", k, S))
    S = S + torch.einsum("bhk,bhv->bhkv", k, u)
    o = torch.einsum("bhk,bhkv->bhv", q.to(dt) * scale, S)
    return o.to(q.dtype), S


def delta_rule_loop(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    scale: float,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Token-by-token reference: q, k (B, T, H, K), v (B, T, H, V), beta (B, T, H)
    -> o (B, T, H, V), final S (B, H, K, V)."""
    dt = _compute_dtype(q)
    S = _zero_state(q, v, dt) if initial_state is None else initial_state.to(dt)
    outs = []
    for t in range(q.shape[1]):
        o, S = delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], S, scale)
        outs.append(o)
    return torch.stack(outs, dim=1), S


def delta_rule_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    scale: float,
    initial_state: Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """Chunkwise WY form; same contract as `delta_rule_loop`.

    Inside a chunk entered with state S0, the per-token writes u_r = β_r (v_r − S_{r−1}ᵀ k_r)
    satisfy  (I + tril₋₁(diag(β) K Kᵀ)) U = diag(β) V − diag(β) K S0,  so with A that unit
    lower-triangular matrix, W = A⁻¹ diag(β) K and U' = A⁻¹ diag(β) V (both independent of S0,
    computed for all chunks at once by one triangular solve):
        U = U' − W S0,   O = scale · (Q S0 + tril(Q Kᵀ) U),   S_end = S0 + Kᵀ U.
    Only this last recurrence over chunks is a Python loop.
    """
    B, T, H, K = q.shape
    dt = _compute_dtype(q)
    C = chunk_size
    n = -(-T // C)
    pad = n * C - T
    # zero k and β on padded tokens leave the state unchanged: S − β k(...) = S
    qc, kc, vc = (
        rearrange(_pad_time(x.to(dt), pad), "b (n c) h d -> b h n c d", c=C) for x in (q, k, v)
    )
    bc = rearrange(_pad_time(beta.to(dt), pad), "b (n c) h -> b h n c", c=C)[..., None]

    kb = kc * bc
    eye = torch.eye(C, dtype=dt, device=q.device)
    A = (kb @ kc.transpose(-1, -2)).tril(-1) + eye  # (B, H, n, C, C), unit lower-triangular
    W = torch.linalg.solve_triangular(A, kb, upper=False, unitriangular=True)
    U = torch.linalg.solve_triangular(A, vc * bc, upper=False, unitriangular=True)
    qk = (qc @ kc.transpose(-1, -2)).tril() * scale  # (B, H, n, C, C)

    S = _zero_state(q, v, dt) if initial_state is None else initial_state.to(dt)
    outs = []
    for i in range(n):
        u = U[:, :, i] - W[:, :, i] @ S  # (B, H, C, V)
        outs.append((qc[:, :, i] * scale) @ S + qk[:, :, i] @ u)
        S = S + kc[:, :, i].transpose(-1, -2) @ u
    o = rearrange(torch.stack(outs, dim=2), "b h n c v -> b (n c) h v")[:, :T]
    return o.to(q.dtype), S

"""Plain-PyTorch references for Mamba's selective scan (S6; Gu & Dao 2023, Algorithm 2).

The recurrence, per channel c (diagonal decay per channel AND state index, state of size N):

    state_t[c, :] = exp(delta_t[c] * A[c, :]) * state_{t-1}[c, :] + delta_t[c] * u_t[c] * B_t
    y_t[c]        = state_t[c, :] . C_t + D[c] * u_t[c]

Two forms, both differentiable by autograd:
  * `selective_scan_loop`: one Python step per token, the equation as written (tests, `step`).
  * `selective_scan_chunked`: the same recurrence in 2L + seqlen/L vectorised steps instead of
    seqlen (L = chunk_size): a scan over the L positions of every chunk at once from a zero
    state gives each chunk's own end state; a pass over the chunks carries the true state from
    chunk to chunk; a second scan over the L positions restarts every chunk from its true
    entering state and reads out y. Exact in any dtype: it only ever multiplies by decays <= 1.
    (The other parallel form, h_l = exp(cs_l) * cumsum(exp(-cs_s) v_s) with cs the cumulative
    log-decay, needs exp(-cs_s), which overflows fp32 once a chunk's total log-decay passes ~88
    -- a few tokens of delta * |A| = 16; the exact quadratic form needs an (L, L, channels, N)
    tensor per chunk, far too large. S6's decay is per (channel, state), unlike SSD's scalar
    per head, so SSD's cheap intra-chunk quadratic form does not carry over.)

Shapes (the contract in docs/CONTRACTS.md):
    u, delta: (batch, seqlen, channels), delta after softplus
    A: (channels, dstate), negative          B, C: (batch, seqlen, dstate)
    D: (channels,) or None                   initial_state: (batch, channels, dstate)
    ->  y: (batch, seqlen, channels) in u's dtype,
        final_state: (batch, channels, dstate) in the compute dtype (>= fp32)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def _check(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    b, t, c = u.shape
    assert delta.shape == u.shape, f"delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}"
    assert A.ndim == 2 and A.shape[0] == c, f"A must be (channels, dstate) with channels = {c}, got {tuple(A.shape)}"
    n = A.shape[1]
    assert B.shape == C.shape == (b, t, n), (
        f"B, C must be (batch, seqlen, dstate) = {(b, t, n)}; got B {tuple(B.shape)}, C {tuple(C.shape)}"
    )


def delta_activation(delta: Tensor, bias: Tensor | None = None, softplus: bool = False) -> Tensor:
    """The time step the scan uses from a pre-activation delta: delta + bias, then softplus,
    in fp32 (>= fp32) when either is asked for (under bf16 autocast a bf16 bias add would
    quantise small time steps), else delta itself. Mamba: softplus(dt_proj(dt) + dt_bias)."""
    if bias is None and not softplus:
        return delta
    ct = torch.promote_types(delta.dtype, torch.float32)
    x = delta.to(ct) + bias.to(ct) if bias is not None else delta.to(ct)
    return F.softplus(x) if softplus else x


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.promote_types(u.dtype, torch.float32)


def selective_scan_step(
    state: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One token of the recurrence (Mamba's decode step).

    state: (batch, channels, dstate); u, delta: (batch, channels); A: (channels, dstate);
    B, C: (batch, dstate); D: (channels,) or None.
    Returns y: (batch, channels) in u's dtype and the new state (state's dtype, a new tensor).
    """
    dtype = state.dtype
    uf, df = u.to(dtype), delta.to(dtype)
    decay = torch.exp(df[..., None] * A.to(dtype))  # (b, c, n)
    state = decay * state + (df * uf)[..., None] * B.to(dtype)[:, None, :]
    y = torch.einsum("bcn,bn->bc", state, C.to(dtype))
    if D is not None:
        y = y + D.to(dtype) * uf
    return y.to(u.dtype), state


def selective_scan_loop(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Token-by-token selective scan. Shapes: see the module docstring."""
    _check(u, delta, A, B, C)
    b, t, c = u.shape
    dtype = _compute_dtype(u)
    state = u.new_zeros(b, c, A.shape[1], dtype=dtype) if initial_state is None else initial_state.to(dtype)
    ys = []
    for i in range(t):
        y, state = selective_scan_step(state, u[:, i].to(dtype), delta[:, i], A, B[:, i], C[:, i], D)
        ys.append(y)
    y = torch.stack(ys, dim=1) if ys else u.new_zeros(b, 0, c, dtype=dtype)
    return y.to(u.dtype), state


def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
    chunk_size: int = 32,
) -> tuple[Tensor, Tensor]:
    """Chunked selective scan (see the module docstring); 2 * chunk_size + seqlen / chunk_size
    vectorised steps, so chunk_size ~ sqrt(seqlen) is best.

    `seqlen` need not be a multiple of `chunk_size`: the tail is padded with delta = 0 (decay 1,
    no input), invisible to y and to the final state.

    Every step works on one position of all chunks at once, a (batch, nchunks, channels, dstate)
    slice; the full (batch, seqlen, channels, dstate) tensor of states is never allocated in one
    piece. That matters on CPU: such a tensor is tens of MB (8 x 256 x 256 x 16 fp32 = 34 MB at
    the toy size), above glibc's mmap threshold, so each one costs fresh zeroed pages, measured
    at 4x the arithmetic on the 2-core CI machine.
    """
    _check(u, delta, A, B, C)
    assert chunk_size > 0, f"chunk_size must be positive, got {chunk_size}"
    b, t, c = u.shape
    n = A.shape[1]
    dtype = _compute_dtype(u)
    L = chunk_size
    pad = (-t) % L
    uf, df, Bf, Cf = (v.to(dtype) for v in (u, delta, B, C))
    if pad:
        uf, df, Bf, Cf = (F.pad(v, (0, 0, 0, pad)) for v in (uf, df, Bf, Cf))
    Af = A.to(dtype)

    # Position-major views: entry l holds position l of every chunk. unbind, not indexing: the
    # backward of t[l] writes a zero tensor of t's full size per step.
    d_l = rearrange(df, "b (k l) c -> l b k c 1", l=L).unbind(0)
    du_l = rearrange(df * uf, "b (k l) c -> l b k c 1", l=L).unbind(0)
    B_l = rearrange(Bf, "b (k l) n -> l b k 1 n", l=L).unbind(0)
    C_l = rearrange(Cf, "b (k l) n -> l b k 1 n", l=L).unbind(0)
    decay = [torch.exp(d * Af) for d in d_l]  # exp(delta_t A), (b, k, c, n) each
    inputs = [du * Bn for du, Bn in zip(du_l, B_l)]  # delta_t u_t B_t

    # 1. The state each chunk reaches from a zero start: a scan over its L positions, all
    #    chunks at once.
    local = inputs[0]
    for i in range(1, L):
        local = decay[i] * local + inputs[i]

    # 2. Carry the true state across chunks. A chunk's total decay is exp(A * sum of its
    #    deltas): one product, no cumulative-sum cancellation.
    chunk_decay = torch.exp(rearrange(df, "b (k l) c -> b k l c", l=L).sum(2)[..., None] * Af)  # (b, k, c, n)
    state = u.new_zeros(b, c, n, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    entering = []
    for decay_k, local_k in zip(chunk_decay.unbind(1), local.unbind(1)):
        entering.append(state)
        state = decay_k * state + local_k

    # 3. Rescan every chunk from its true entering state and read out y_t = state_t . C_t.
    h = torch.stack(entering, dim=1)  # (b, k, c, n)
    ys = []
    for i in range(L):
        h = decay[i] * h + inputs[i]
        ys.append((h * C_l[i]).sum(-1))  # (b, k, c)
    y = rearrange(torch.stack(ys, dim=2), "b k l c -> b (k l) c")[:, :t]
    if D is not None:
        y = y + D.to(dtype) * uf[:, :t]
    return y.to(u.dtype), state

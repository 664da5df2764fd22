"""Plain-PyTorch references for the SSD scan (Mamba2, Dao & Gu 2024; HADES step 7).

The recurrence, per head h (scalar decay per head, state of size P x N):

    state_t = exp(dt_t * A_h) * state_{t-1} + dt_t * x_t B_t^T        (P, N)
    y_t     = state_t C_t + D_h * x_t                                  (P,)

Heads share B and C within a group: head h reads group h // (nheads // ngroups).

Two forms, both differentiable by autograd:
  * `ssd_loop`: one Python step per token, the equation as written. The ground truth of the
    chain of trust (loop -> chunked -> Triton); slow, only tests and `step` use it.
  * `ssd_chunked`: the SSD chunked algorithm. Inside a chunk of L tokens the output is a masked
    quadratic form (attention-like, decay matrix exp(segsum)); across chunks a state of size
    (P, N) per head is passed on, one Python step per chunk, not per token. This is the
    reference training path on CPU and the oracle of the Triton kernel.

Shapes (the contract in docs/CONTRACTS.md):
    x:  (batch, seqlen, nheads, headdim)       dt: (batch, seqlen, nheads), after softplus
    A:  (nheads,), negative                     B, C: (batch, seqlen, ngroups, dstate)
    D:  (nheads,) or None                       initial_state: (batch, nheads, headdim, dstate)
    ->  y: (batch, seqlen, nheads, headdim) in x's dtype,
        final_state: (batch, nheads, headdim, dstate) in the compute dtype (>= fp32)

Low-precision inputs are computed in fp32: the decays exp(sum dt*A) lose too much in bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor


def _check(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[int, int]:
    """Validate the shape contract; return (nheads, heads per group)."""
    b, t, h, _ = x.shape
    assert dt.shape == (b, t, h), f"dt must be (batch, seqlen, nheads) = {(b, t, h)}, got {tuple(dt.shape)}"
    assert A.shape == (h,), f"A must be (nheads,) = ({h},), got {tuple(A.shape)}"
    assert B.shape == C.shape and B.shape[:2] == (b, t), (
        f"B, C must be (batch, seqlen, ngroups, dstate) with batch, seqlen = {(b, t)}; "
        f"got B {tuple(B.shape)}, C {tuple(C.shape)}"
    )
    g = B.shape[2]
    assert h % g == 0, f"nheads {h} must be a multiple of ngroups {g}"
    return h, h // g


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def ssd_step(
    state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One token of the recurrence (the decode step of Mamba2 and HADES).

    state: (batch, nheads, headdim, dstate); x: (batch, nheads, headdim); dt: (batch, nheads);
    A: (nheads,); B, C: (batch, ngroups, dstate); D: (nheads,) or None.
    Returns y: (batch, nheads, headdim) in x's dtype and the new state (state's dtype, a new tensor).
    """
    h, r = x.shape[1], x.shape[1] // B.shape[1]
    dtype = state.dtype
    xf, dtf = x.to(dtype), dt.to(dtype)
    Bh = repeat(B.to(dtype), "b g n -> b (g r) n", r=r)
    Ch = repeat(C.to(dtype), "b g n -> b (g r) n", r=r)
    decay = torch.exp(dtf * A.to(dtype))  # (b, h)
    state = decay[..., None, None] * state + torch.einsum("bh,bhp,bhn->bhpn", dtf, xf, Bh)
    y = torch.einsum("bhpn,bhn->bhp", state, Ch)
    if D is not None:
        y = y + D.to(dtype)[:, None] * xf
    assert y.shape[1] == h
    return y.to(x.dtype), state


def ssd_loop(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Token-by-token SSD recurrence. Shapes: see the module docstring."""
    _check(x, dt, A, B, C)
    b, t, h, p = x.shape
    n = B.shape[-1]
    dtype = _compute_dtype(x)
    state = (
        x.new_zeros(b, h, p, n, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    )
    ys = []
    for i in range(t):
        y, state = ssd_step(state, x[:, i].to(dtype), dt[:, i], A, B[:, i], C[:, i], D)
        ys.append(y)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p, dtype=dtype)
    return y.to(x.dtype), state


def segsum(a_cum: Tensor) -> Tensor:
    """Segment sums from chunk-local cumulative sums: out[..., l, s] = a_{s+1} + ... + a_l =
    a_cum[..., l] - a_cum[..., s] for l >= s, -inf above the diagonal, so exp(out) is the causal
    decay matrix of a chunk.

    The difference of cumulative sums is accurate to eps * |a_cum|; a_cum restarts at every
    chunk, so that is eps times one chunk's total log-decay (the Triton kernels do the same).
    a_cum: (..., L) -> (..., L, L)
    """
    L = a_cum.shape[-1]
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=a_cum.device))
    diff = a_cum[..., :, None] - a_cum[..., None, :]
    return diff.masked_fill(~causal, float("-inf"))


def ssd_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """SSD chunked algorithm: intra-chunk quadratic form + inter-chunk state passing.

    Shapes: see the module docstring. `seqlen` need not be a multiple of `chunk_size`: the tail
    is padded with dt = 0 and x = 0, i.e. a decay of exactly 1 and no input, so neither the
    outputs nor the final state see the padding.

    Internally heads are split as (group, head-in-group) and put before time, so every
    contraction is a plain batched matmul over contiguous (chunk, chunk) / (chunk, dim) tiles
    and B, C broadcast over the heads of their group without being copied per head.
    """
    _, r = _check(x, dt, A, B, C)
    assert chunk_size > 0, f"chunk_size must be positive, got {chunk_size}"
    b, t, h, p = x.shape
    g, n = B.shape[2:]
    dtype = _compute_dtype(x)
    L = chunk_size
    pad = (-t) % L
    xf, dtf, Bf, Cf = (v.to(dtype) for v in (x, dt, B, C))
    if pad:
        xf, Bf, Cf = (F.pad(v, (0, 0, 0, 0, 0, pad)) for v in (xf, Bf, Cf))
        dtf = F.pad(dtf, (0, 0, 0, pad))

    # x is pre-multiplied by dt: every term below uses dt_s x_s.
    xdt = rearrange(xf * dtf[..., None], "b (c l) (g r) p -> b g r c l p", l=L, g=g)
    a = rearrange(dtf * A.to(dtype), "b (c l) (g r) -> b g r c l", l=L, g=g)  # log-decay, <= 0
    a_cum = torch.cumsum(a, dim=-1)  # log-decay from the chunk start up to l (inclusive)
    Bc = rearrange(Bf, "b (c l) g n -> b g 1 c l n", l=L)
    Cc = rearrange(Cf, "b (c l) g n -> b g 1 c l n", l=L)

    # 1. Within each chunk: y_l = sum_{s <= l} (C_l . B_s) exp(a_{s+1} + ... + a_l) dt_s x_s.
    #    C.B is shared by the heads of a group; the decay matrix is per head.
    CB = Cc @ Bc.transpose(-1, -2)  # (b, g, 1, c, l, s)
    y = (CB * torch.exp(segsum(a_cum))) @ xdt  # (b, g, r, c, l, p)

    # 2. The state each chunk produces on its own at its end: sum_s exp(a_{s+1..L}) dt_s x_s B_s^T.
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, g, r, c, l)
    chunk_states = (xdt * decay_to_end[..., None]).transpose(-1, -2) @ Bc  # (b, g, r, c, p, n)

    # 3. Pass states across chunks: entering chunk k is the state after chunk k-1. One step per
    #    chunk (seqlen / L of them), exact, linear in the number of chunks. unbind, not
    #    indexing: the backward of t[..., k, :, :] writes a zero tensor of t's full size per step.
    chunk_decay = torch.exp(a_cum[..., -1])  # (b, g, r, c): total decay over each chunk
    if initial_state is None:
        state = x.new_zeros(b, g, r, p, n, dtype=dtype)
    else:
        state = rearrange(initial_state.to(dtype), "b (g r) p n -> b g r p n", g=g)
    entering = []
    for decay_k, states_k in zip(chunk_decay.unbind(3), chunk_states.unbind(3)):
        entering.append(state)
        state = decay_k[..., None, None] * state + states_k
    prev = torch.stack(entering, dim=3)  # (b, g, r, c, p, n)

    # 4. Contribution of the entering state at position l: exp(a_1 + ... + a_l) C_l . state.
    y = y + (Cc @ prev.transpose(-1, -2)) * torch.exp(a_cum)[..., None]

    y = rearrange(y, "b g r c l p -> b (c l) (g r) p")[:, :t]
    if D is not None:
        y = y + D.to(dtype)[:, None] * xf[:, :t]
    return y.to(x.dtype), rearrange(state, "b g r p n -> b (g r) p n")

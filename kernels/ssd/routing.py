"""HADES's routed Δ (docs/paper.md "The HADES mixer", steps 5-7) and the fused scan entry that consumes it.

Each of the H slots of a token reads one filter channel of dt_raw (B, T, M), chosen by the
router (`slot_ids`); expert slots add their spectral bias γ_j b_t,j (`slot_bias`, zero for
shared slots); every slot adds dt_bias; softplus gives Δ:

    Δ[b, t, j] = softplus(dt_raw[b, t, slot_ids[b, t, j]] + slot_bias[b, t, j] + dt_bias[j])

Mamba2 is the special case without routing (dt_raw has H channels, slot j reads channel j).
`routed_dt` is the plain-torch definition; `ssd_scan_routed` runs the composition
routed_dt -> SSD scan, fused in the Triton kernels on CUDA (`op.ssd_scan_routed`) and as the
plain-torch composition elsewhere. Both give the same function and the same gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._triton import triton_op
from .reference import ssd_chunked


def routed_dt(
    dt_raw: Tensor,
    slot_ids: Tensor | None = None,
    slot_bias: Tensor | None = None,
    dt_bias: Tensor | None = None,
    softplus: bool = True,
) -> Tensor:
    """Δ after routing, fp32 (or fp64 for fp64 input).

    dt_raw: (batch, seqlen, M); slot_ids: (batch, seqlen, H) int in [0, M), or None (then
    H = M and slot j reads channel j); slot_bias: (batch, seqlen, H) or None; dt_bias: (H,),
    () or None -> (batch, seqlen, H)."""
    pre = dt_raw if dt_raw.dtype == torch.float64 else dt_raw.float()
    if slot_ids is not None:
        pre = pre.gather(-1, slot_ids.long())
    if slot_bias is not None:
        pre = pre + slot_bias.to(pre.dtype)
    if dt_bias is not None:
        pre = pre + dt_bias.to(pre.dtype)
    return F.softplus(pre) if softplus else pre


def ssd_scan_routed(
    x: Tensor,
    dt_raw: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    slot_ids: Tensor | None = None,
    slot_bias: Tensor | None = None,
    initial_state: Tensor | None = None,
    chunk_size: int = 64,
    softplus: bool = True,
) -> tuple[Tensor, Tensor]:
    """y, final_state = SSD scan of x with Δ = routed_dt(dt_raw, slot_ids, slot_bias, dt_bias).

    Shapes: x (batch, seqlen, H, headdim); A (H,); B, C (batch, seqlen, ngroups, dstate);
    D (H,) or None; initial_state (batch, H, headdim, dstate) or None; Δ arguments as in
    `routed_dt`. -> y like x, final_state (batch, H, headdim, dstate) in fp32.
    Triton (fused gather + bias + softplus + cumsum) for CUDA inputs, else the plain-torch
    composition `ssd_chunked(x, routed_dt(...), ...)`."""
    if x.is_cuda:
        fused = triton_op("kernels.ssd", "ssd_scan_routed")
        if fused is not None:
            return fused(
                x, dt_raw, A, B, C, D, dt_bias=dt_bias, slot_ids=slot_ids, slot_bias=slot_bias,
                initial_state=initial_state, chunk_size=chunk_size, softplus=softplus,
            )
    dt = routed_dt(dt_raw, slot_ids, slot_bias, dt_bias, softplus)
    return ssd_chunked(x, dt, A, B, C, D, initial_state=initial_state, chunk_size=chunk_size)

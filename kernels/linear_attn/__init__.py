"""Linear attention and retention (scalar decay per head): plain-torch references only.

    from kernels.linear_attn import linear_attn_chunked
    o, final_state = linear_attn_chunked(q, k, v, scale, log_decay=None, initial_state=None, chunk_size=64)

There is no Triton kernel of ours: on CUDA the mixers (`hades.models.mixers.linear_attn`,
`retnet`) call fla's `chunk_linear_attn` / `chunk_retention` instead. Shapes and semantics:
`kernels/linear_attn/reference.py`.
"""

from __future__ import annotations

from .reference import linear_attn_chunked, linear_attn_loop, linear_attn_step

__all__ = ["linear_attn_chunked", "linear_attn_loop", "linear_attn_step"]

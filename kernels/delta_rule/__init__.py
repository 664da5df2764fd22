"""The delta rule (DeltaNet): plain-torch references only.

    from kernels.delta_rule import delta_rule_chunked, l2norm
    o, final_state = delta_rule_chunked(l2norm(q), l2norm(k), v, beta, scale, initial_state=None, chunk_size=64)

There is no Triton kernel of ours: on CUDA the mixer (`hades.models.mixers.deltanet`) calls
fla's `chunk_delta_rule` instead. Shapes and semantics: `kernels/delta_rule/reference.py`.
"""

from __future__ import annotations

from .reference import delta_rule_chunked, delta_rule_loop, delta_rule_step, l2norm

__all__ = ["delta_rule_chunked", "delta_rule_loop", "delta_rule_step", "l2norm"]

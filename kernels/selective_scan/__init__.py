"""Mamba's selective scan (S6): public entry point, Triton on CUDA, chunked reference elsewhere.

    from kernels.selective_scan import selective_scan
    y, final_state = selective_scan(u, delta, A, B, C, D, initial_state=None, chunk_size=32,
                                    delta_bias=None, delta_softplus=False)

Shapes and semantics: `kernels/selective_scan/reference.py`. The Triton path lives in
`kernels/selective_scan/op.py`, imported lazily so this package works without it.
"""

from __future__ import annotations

from torch import Tensor

from .._triton import triton_op
from .reference import (
    delta_activation,
    selective_scan_chunked,
    selective_scan_loop,
    selective_scan_step,
)


def _triton_op():
    """The Triton `selective_scan` from op.py, or None where it cannot be imported."""
    return triton_op(__name__, "selective_scan")


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
    chunk_size: int = 32,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> tuple[Tensor, Tensor]:
    """y, final_state = selective scan of u. Triton for CUDA inputs when available, else
    `selective_scan_chunked`. delta_bias (channels,), delta_softplus: the scan's time step is
    `delta_activation(delta, delta_bias, delta_softplus)` (mamba_ssm's selective_scan_fn
    arguments; the Triton kernels compute it in-kernel)."""
    if u.is_cuda:
        op = _triton_op()
        if op is not None:
            return op(u, delta, A, B, C, D, initial_state=initial_state, chunk_size=chunk_size,
                      delta_bias=delta_bias, delta_softplus=delta_softplus)
    delta = delta_activation(delta, delta_bias, delta_softplus)
    return selective_scan_chunked(u, delta, A, B, C, D, initial_state=initial_state, chunk_size=chunk_size)


__all__ = ["delta_activation", "selective_scan", "selective_scan_chunked", "selective_scan_loop", "selective_scan_step"]

"""SSD scan (Mamba2 / HADES): public entry point, Triton on CUDA, chunked reference elsewhere.

    from kernels.ssd import ssd_scan
    y, final_state = ssd_scan(x, dt, A, B, C, D, initial_state=None, chunk_size=64)

Shapes and semantics: `kernels/ssd/reference.py`. The Triton path lives in `kernels/ssd/op.py`;
it is imported lazily, so this package works (and the references stay importable) on machines
without Triton or without that module. `ssd_scan_routed` (routing.py) is the variant that forms
HADES's routed Δ = softplus(dt_raw[ids] + bias + dt_bias) inside the kernel.
"""

from __future__ import annotations

from torch import Tensor

from .._triton import triton_op
from .reference import segsum, ssd_chunked, ssd_loop, ssd_step
from .routing import routed_dt, ssd_scan_routed


def _triton_op():
    """The Triton `ssd_scan` from op.py, or None where it cannot be imported (no Triton, CPU
    machine, module not written yet)."""
    return triton_op(__name__, "ssd_scan")


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
    chunk_size: int = 64,
    grad_into=None,
) -> tuple[Tensor, Tensor]:
    """y, final_state = SSD scan of x. Triton for CUDA inputs when available, else `ssd_chunked`.
    grad_into: `kernels.slab.GradSlab` parts for the gradients of x, B, C (Triton path; the
    reference ignores them)."""
    if x.is_cuda:
        op = _triton_op()
        if op is not None:
            return op(x, dt, A, B, C, D, initial_state=initial_state, chunk_size=chunk_size, grad_into=grad_into)
    return ssd_chunked(x, dt, A, B, C, D, initial_state=initial_state, chunk_size=chunk_size)


__all__ = ["routed_dt", "segsum", "ssd_chunked", "ssd_loop", "ssd_scan", "ssd_scan_routed", "ssd_step"]

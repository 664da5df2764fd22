"""Sparse Mamba's selective scan with a companion-form state matrix (SC-/SO-Mamba).

    from kernels.companion_scan import companion_scan
    y, final_state = companion_scan(u, delta, lam, X, D, form="controllable")

Triton on CUDA (`op.py`, imported lazily so this package works without Triton), the chunked
eigenbasis scan (plain PyTorch, `companion_scan_chunked`) elsewhere. Shapes and semantics:
`kernels/companion_scan/reference.py`.
"""

from __future__ import annotations

from torch import Tensor

from .._triton import triton_op
from .reference import (
    FORMS,
    companion_coefficients,
    companion_matrix,
    companion_scan_chunked,
    companion_scan_loop,
    companion_scan_step,
    eigen_readout,
    quadratic_roots,
)


def _triton_op():
    """The Triton `companion_scan` from op.py, or None where it cannot be imported."""
    return triton_op(__name__, "companion_scan")


def companion_scan(
    u: Tensor, delta: Tensor, lam: Tensor, X: Tensor, D: Tensor | None = None, form: str = "controllable",
    initial_state: Tensor | None = None, chunk_size: int = 32,
) -> tuple[Tensor, Tensor]:
    """y, final_state of the companion scan. Triton for CUDA inputs when available, else
    `companion_scan_chunked`."""
    if u.is_cuda:
        op = _triton_op()
        if op is not None:
            return op(u, delta, lam, X, D, form, initial_state, chunk_size)
    return companion_scan_chunked(u, delta, lam, X, D, form, initial_state, chunk_size)


__all__ = [
    "FORMS",
    "companion_scan",
    "companion_coefficients",
    "companion_matrix",
    "companion_scan_chunked",
    "companion_scan_loop",
    "companion_scan_step",
    "eigen_readout",
    "quadratic_roots",
]

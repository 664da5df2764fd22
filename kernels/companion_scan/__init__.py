"""Sparse Mamba's selective scan with a companion-form state matrix (SC-/SO-Mamba).

    from kernels.companion_scan import companion_scan_chunked
    y, final_state = companion_scan_chunked(u, delta, lam, X, D, form="controllable")

There is no Triton kernel: the chunked eigenbasis scan (plain PyTorch) is the forward on every
device. Shapes and semantics: `kernels/companion_scan/reference.py`.
"""

from __future__ import annotations

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

__all__ = [
    "FORMS",
    "companion_coefficients",
    "companion_matrix",
    "companion_scan_chunked",
    "companion_scan_loop",
    "companion_scan_step",
    "eigen_readout",
    "quadratic_roots",
]

"""Output buffers of every Triton op in `kernels/`, allocated in one place so that one switch
covers them all; and `rows`, the (M, dim) view of an input that the row-wise kernels read.

Tests set `POISON_OUTPUTS = True` (tests/gpu/conftest.py) to fill every output buffer with NaN
before the kernels write it: a tile, row or partial sum that a kernel fails to write then shows
up as NaN instead of stale memory.
"""

from __future__ import annotations

import torch
from torch import Tensor

POISON_OUTPUTS = False


def empty(*shape: int, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """An uninitialised tensor on `like`'s device (NaN-filled while POISON_OUTPUTS is set)."""
    dtype = dtype or like.dtype
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype)
    return torch.empty(shape, device=like.device, dtype=dtype)


def rows(t: Tensor) -> Tensor:
    """(..., dim) -> (M, dim) with a unit column stride: a view when the strides allow it."""
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()

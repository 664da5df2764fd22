"""Inputs of the selective-scan interpreter checks (tests/test_selective_scan_reference.py's
split forward, tests/test_selective_scan_bwd.py's split backward)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def split_case_inputs(b: int, t: int, c: int, n: int, dtype: torch.dtype, opt: dict, seed: int) -> list:
    """[u, delta, A, B, C, D or None, initial state or None] of one case: opt "bc" = "strided" or
    "odd" makes B and C slices of one projection (row stride 2n + 6 or 2n + 5), "noD" drops D,
    "init" adds an initial state."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    u, delta = r(b, t, c).to(dtype), F.softplus(r(b, t, c) - 1.0).to(dtype)
    A = -torch.exp(r(c, n) * 0.5)
    if "bc" in opt:
        x = r(b, t, 2 * n + (6 if opt["bc"] == "strided" else 5)).to(dtype)
        B, C = x[..., 2:2 + n], x[..., 2 + n:2 + 2 * n]
    else:
        B, C = r(b, t, n).to(dtype), r(b, t, n).to(dtype)
    D = None if opt.get("noD") else r(c)
    s0 = r(b, c, n) if opt.get("init") else None
    return [u, delta, A, B, C, D, s0], gen

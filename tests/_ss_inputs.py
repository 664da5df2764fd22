"""Inputs of the selective-scan interpreter checks (tests/test_selective_scan_reference.py's
split forward, tests/test_selective_scan_bwd.py's split backward)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def split_case_inputs(b: int, t: int, c: int, n: int, dtype: torch.dtype, opt: dict, seed: int) -> list:
    """[u, delta, A, B, C, D or None, initial state or None, delta_bias or None] of one case: opt
    "bc" = "strided" or "odd" makes B and C slices of one projection (row stride 2n + 6 or
    2n + 5), "noD" drops D, "init" adds an initial state, "softplus" makes delta a pre-activation
    (of either sign; `scan_args`), with an fp32 bias when it is "bias"."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    u, delta = r(b, t, c).to(dtype), F.softplus(r(b, t, c) - 1.0).to(dtype)
    bias = None
    if opt.get("softplus"):
        delta = (2 * r(b, t, c) - 1.0).to(dtype)
        bias = r(c) - 1.0 if opt["softplus"] == "bias" else None
    A = -torch.exp(r(c, n) * 0.5)
    if "bc" in opt:
        x = r(b, t, 2 * n + (6 if opt["bc"] == "strided" else 5)).to(dtype)
        B, C = x[..., 2:2 + n], x[..., 2 + n:2 + 2 * n]
    else:
        B, C = r(b, t, n).to(dtype), r(b, t, n).to(dtype)
    D = None if opt.get("noD") else r(c)
    s0 = r(b, c, n) if opt.get("init") else None
    return [u, delta, A, B, C, D, s0, bias], gen


def scan_args(inputs: list, opt: dict, reference: bool = False) -> tuple[list, dict]:
    """The positional (u .. D) and keyword arguments of a selective scan of `inputs`
    (split_case_inputs'); reference: for selective_scan_loop, the time step's activation done
    here (`delta_activation`, in the inputs' dtype)."""
    from kernels.selective_scan.reference import delta_activation

    u, delta, A, B, C, D, s0, bias = inputs
    softplus = bool(opt.get("softplus"))
    if reference:
        return [u, delta_activation(delta, bias, softplus), A, B, C, D], {"initial_state": s0}
    return [u, delta, A, B, C, D], {"initial_state": s0, "delta_bias": bias, "delta_softplus": softplus}


NAMES = ("u", "delta", "A", "B", "C", "D", "initial_state", "delta_bias")  # of split_case_inputs' entries

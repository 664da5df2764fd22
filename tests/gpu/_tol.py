"""Tolerance rule of the GPU kernel tests (STYLE.md, issue 4).

Errors are relative in the L2 norm, ||out - ref|| / ||ref||, against an fp64 reference on the
same (rounded) inputs. fp32 inputs: <= 1e-3 (the kernels' matrix products run in tf32).
bf16 inputs: <= 1e-2, or <= 2x the error of the plain-torch reference fed the same bf16 inputs.
NaN never passes.
"""

from __future__ import annotations

import torch

FP32_TOL = 1e-3
RECORD: list[dict] = []  # every checked error, written out by conftest when HADES_GPU_TEST_LOG is set
BF16_TOL = 1e-2


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.double(), ref.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def check(name: str, out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, torch_out: torch.Tensor | None = None) -> float:
    """Assert the rule for one tensor; return the error. torch_out: the plain-torch reference's
    result on the same low-precision inputs (for the 2x rule)."""
    err = rel_err(out, ref)
    if dtype == torch.float32:
        tol = FP32_TOL
    else:
        tol = BF16_TOL
        if torch_out is not None:
            tol = max(tol, 2 * rel_err(torch_out, ref))
    RECORD.append({"name": name, "dtype": str(dtype).replace("torch.", ""), "err": err, "tol": tol})
    assert err <= tol, f"{name}: relative error {err:.3e} > tolerance {tol:.1e} ({dtype})"
    return err

"""Mamba's fused output gate y * silu(z) (kernels/gate).

- on the CPU (CI): the public entry runs the reference, which is the mixer's y * silu(z) in fp32;
- the Triton kernels == the fp64 reference in Triton's CPU interpreter: output, dy, dz; fp32 and
  bf16, widths above one program's columns (masked), leading dims, z a strided slice of the
  in-projection and its gradient written into a `kernels.slab.GradSlab` (the split's backward
  then copies only x's piece: the whole gradient equals torch.split's), NaN-poisoned outputs.
  Skipped where Triton is not installed; run directly with `TRITON_INTERPRET=1 python
  tests/test_gate_kernels.py`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _interpreter import interpreter_main, needs_triton, rel_err, run_in_interpreter

from kernels.gate import silu_gate, silu_gate_ref

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)


def test_cpu_entry_is_the_reference_and_the_mixers_math():
    gen = torch.Generator().manual_seed(0)
    y, z = torch.randn(2, 7, 96, generator=gen), 3 * torch.randn(2, 7, 96, generator=gen)
    assert torch.equal(silu_gate(y, z), y * F.silu(z))  # fp32: the mixer's reference path exactly
    yb, zb = y.bfloat16(), z.bfloat16()
    out = silu_gate(yb, zb)
    assert out.dtype == torch.bfloat16 and torch.equal(out, (y.bfloat16().float() * F.silu(zb.float())).bfloat16())
    assert torch.equal(silu_gate_ref(yb, zb), out)
    with pytest.raises(AssertionError, match="one shape"):
        silu_gate(y, z[..., :5])


# (name, leading shape, width, dtype, z and its gradient in a slab)
CASES = [
    ("fp32_96", (37,), 96, "float32", False),
    ("fp32_1500_lead", (2, 5), 1500, "float32", False),
    ("bf16_slab", (3, 9), 200, "bfloat16", True),
    ("fp32_slab_2100", (5,), 2100, "float32", True),
]
TOL = {"float32": 1e-6, "bfloat16": 1e-2}


def _checks() -> list[dict]:
    import kernels._buffers
    from kernels.gate import op
    from kernels.slab import GradSlab

    kernels._buffers.POISON_OUTPUTS = True
    out = []
    for i, (name, lead, d, dt, slab) in enumerate(CASES):
        dtype = getattr(torch, dt)
        gen = torch.Generator().manual_seed(i)
        xz = (2 * torch.randn(*lead, 2 * d, generator=gen)).to(dtype).requires_grad_(True)
        g = torch.randn(*lead, d, generator=gen)
        gx = torch.randn(*lead, d, generator=gen)
        if slab:
            s = GradSlab(xz, [d, d])
            x, z = s.split(xz)
        else:
            s, (x, z) = None, xz.chunk(2, dim=-1)
        y = (x * 1.5).detach().requires_grad_(True)  # (y: a leaf; x's piece gets its own gradient below)
        in_place = []
        if slab:  # z's gradient arrives as the slab's own piece (not copied there afterwards)
            z.register_hook(lambda gz, s=s, seen=in_place: seen.append(gz.data_ptr() == s.view(1).data_ptr()))
        o = op.silu_gate(y, z, dz_into=s and s.part(1))
        dy, dxz = torch.autograd.grad((o.double() * g).sum() + (x.double() * gx).sum(), [y, xz])
        xr = xz.detach().double().requires_grad_(True)
        yr = y.detach().double().requires_grad_(True)
        orf = yr * F.silu(xr[..., d:])
        dyr, dxzr = torch.autograd.grad((orf * g).sum() + (xr[..., :d] * gx).sum(), [yr, xr])
        out += [{"name": f"{name} out", "err": rel_err(o, orf), "tol": TOL[dt]},
                {"name": f"{name} dy", "err": rel_err(dy, dyr), "tol": TOL[dt]},
                {"name": f"{name} d(x, z)", "err": rel_err(dxz, dxzr), "tol": TOL[dt]}]
        if slab:
            out.append({"name": f"{name} dz written into the slab", "err": float(in_place != [True]), "tol": 0.0})
    return out


@needs_triton
def test_gate_kernels_in_interpreter():
    assert len(run_in_interpreter(__file__)) == 3 * len(CASES) + sum(c[-1] for c in CASES)


if __name__ == "__main__":
    interpreter_main(_checks)

"""Checks on the CPU, in Triton's interpreter, that benchmarks/ssd.py calls the official Mamba2
SSD kernels so that they compute our function: mamba_ssm's `mamba_chunk_scan_combined(x, dt, A,
B, C, chunk, D=D, dt_bias=None, dt_softplus=False)` on ours' inputs (dt = Δ after softplus)
against `kernels.ssd.reference.ssd_chunked` and our Triton `ssd_scan`: y, the final state and
every gradient, fp32; also the official's plain-torch references (`ssd_chunk_scan_combined_ref`,
`ssd_minimal_discrete`) and its fused form (dt_bias + dt_softplus=True vs softplus(dt_raw + bias)).

    bash scripts/official_ssd_package.sh            # .device/official (not in the repository)
    TRITON_INTERPRET=1 PYTHONPATH=$PWD:$PWD/.device/official python scripts/official_ssd_check.py

Three shims make the official launchers run on CPU tensors (this script only; the benchmark runs
them unchanged on the GPU): torch.cuda.device(None) is a no-op, the SM count asked by the
backward is an H100's (132), and each autotuner takes its first configuration (nothing to time).
numpy < 2.3 is needed: Triton 3.6's interpreter converts 1-element arrays with int().
"""

from __future__ import annotations

import contextlib
import os
import sys
import types

import torch
import torch.nn.functional as F

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
_cuda_device = torch.cuda.device
torch.cuda.device = lambda i: contextlib.nullcontext() if i is None else _cuda_device(i)
_props = torch.cuda.get_device_properties
torch.cuda.get_device_properties = lambda d=None: (
    types.SimpleNamespace(multi_processor_count=132) if torch.device(d).type == "cpu" else _props(d))
from triton.runtime.autotuner import Autotuner  # noqa: E402

Autotuner.do_bench = property(lambda self: (lambda fn, quantiles: [1.0, 1.0, 1.0]))

from mamba_ssm.modules.ssd_minimal import ssd_minimal_discrete  # noqa: E402
from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined, ssd_chunk_scan_combined_ref  # noqa: E402

from kernels.ssd.op import ssd_scan  # noqa: E402
from kernels.ssd.reference import ssd_chunked  # noqa: E402

TOL = 1e-5  # fp32 relative L2 (measured ~1e-7..2e-6)
NAMES = ["dx", "ddt", "dA", "dB", "dC", "dD"]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def run(fn, inputs, dy):
    leaves = [v.clone().requires_grad_(True) for v in inputs]
    y, final = fn(*leaves)
    return y.detach(), final.detach(), torch.autograd.grad(y, leaves, dy)


def case(b, t, h, p, n, g, chunk, seed=0):
    torch.manual_seed(seed)
    r = torch.randn
    x, B, C = r(b, t, h, p), r(b, t, g, n), r(b, t, g, n)
    A, D, dt = -torch.exp(r(h) * 0.5), r(h), F.softplus(r(b, t, h) - 2.0)
    dy = r(b, t, h, p)
    inputs = (x, dt, A, B, C, D)
    ref = run(lambda x, dt, A, B, C, D: ssd_chunked(x, dt, A, B, C, D, chunk_size=64), inputs, dy)
    ours = run(lambda x, dt, A, B, C, D: ssd_scan(x, dt, A, B, C, D), inputs, dy)
    off = run(lambda x, dt, A, B, C, D: mamba_chunk_scan_combined(
        x, dt, A, B, C, chunk, D=D, dt_bias=None, dt_softplus=False, return_final_states=True), inputs, dy)
    errs = {}
    for who, got in (("official", off), ("ours", ours)):
        errs[f"{who} y"] = rel(got[0], ref[0])
        errs[f"{who} final"] = rel(got[1], ref[1])
        for name, a, e in zip(NAMES, got[2], ref[2]):
            errs[f"{who} {name}"] = rel(a, e)
    errs["official vs ours y"] = rel(off[0], ours[0])
    if t % chunk == 0:
        errs["official ssd_chunk_scan_combined_ref y"] = rel(ssd_chunk_scan_combined_ref(x, dt, A, B, C, chunk, D=D), ref[0])
        rep = h // g
        yl, sl = ssd_minimal_discrete(x * dt[..., None], A * dt, B.repeat_interleave(rep, 2), C.repeat_interleave(rep, 2), chunk)
        errs["official ssd_minimal_discrete y (no D)"] = rel(yl, ref[0] - D[:, None] * x)
        errs["official ssd_minimal_discrete final"] = rel(sl, ref[1])
    dt_raw, dtb = r(b, t, h) - 2.0, 0.5 * r(h)
    y2 = mamba_chunk_scan_combined(x, dt_raw, A, B, C, chunk, D=D, dt_bias=dtb, dt_softplus=True)
    errs["official dt_bias+softplus y"] = rel(y2, ssd_chunked(x, F.softplus(dt_raw + dtb), A, B, C, D)[0])
    return errs


def main():
    worst = 0.0
    for shape in [(1, 64, 2, 16, 16, 1, 32), (1, 64, 2, 16, 16, 1, 64), (2, 80, 4, 16, 16, 2, 32)]:
        errs = case(*shape)
        print("b, t, h, p, n, g, chunk =", shape)
        for k, v in errs.items():
            print(f"  {k:42s} {v:.2e}")
        worst = max(worst, *errs.values())
    print(f"worst relative L2 {worst:.2e} (tolerance {TOL:.0e})")
    return 0 if worst < TOL else 1


if __name__ == "__main__":
    sys.exit(main())

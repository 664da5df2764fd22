"""The benchmark's reference, mamba_ssm's selective-scan CUDA kernels through our launcher
(benchmarks/official_ss/launch.cu, benchmarks/official_selective_scan.py), gives our fp64
reference's outputs and gradients: a wrong stride or pointer in the launcher would make the
benchmark time the wrong work. Runs where the library is built (HADES_OFFICIAL_SS, default
.device/official_ss: `bash scripts/official_ss_package.sh`); skipped otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kernels.selective_scan.reference import delta_activation, selective_scan_chunked

from ._tol import check

FOLDER = Path(os.environ.get("HADES_OFFICIAL_SS", ".device/official_ss"))
pytestmark = pytest.mark.skipif(not (FOLDER / "libmamba_selective_scan.so").is_file(),
                                reason=f"no {FOLDER}/libmamba_selective_scan.so (scripts/official_ss_package.sh)")


# odd length (the kernel's masked variant); one 2048-token chunk (the even variant); two chunks
# and a partial third (the chunk states handed on); N = 5
@pytest.mark.parametrize("shape", [(2, 301, 64, 16), (1, 2048, 32, 16), (1, 4101, 16, 16), (2, 200, 24, 5)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("softplus", [False, True], ids=["plain", "softplus_bias"])
def test_official_selective_scan_matches_reference(shape, softplus):
    from benchmarks.official_selective_scan import OfficialSelectiveScan

    lib = OfficialSelectiveScan(FOLDER)
    b, t, c, n = shape
    gen = torch.Generator(device="cuda").manual_seed(3)
    r = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    bf = torch.bfloat16
    d = {"u": r(b, t, c).to(bf), "delta": (2 * r(b, t, c) - 1.0 if softplus else F.softplus(r(b, t, c) - 1.0)).to(bf),
         "A": -torch.exp(r(c, n) * 0.5), "B": r(b, t, n).to(bf), "C": r(b, t, n).to(bf), "D": r(c)}
    bias = r(c) - 1.0 if softplus else None
    dy = r(b, t, c).to(bf)
    o = lib.layout(**d, delta_bias=bias)
    y, x = lib.forward(o, softplus)
    grads = lib.ours_layout(lib.backward(o, x, dy.transpose(1, 2), softplus))

    ref = {k: v.detach().double().requires_grad_() for k, v in d.items()}
    rbias = None if bias is None else bias.detach().double().requires_grad_()
    yr, _ = selective_scan_chunked(ref["u"], delta_activation(ref["delta"], rbias, softplus), ref["A"], ref["B"],
                                   ref["C"], ref["D"])
    leaves = list(ref.values()) + ([rbias] if rbias is not None else [])
    gr = torch.autograd.grad((yr * dy.double()).sum(), leaves)
    check(f"official ss {shape} {softplus} y", y.transpose(1, 2), yr, bf)
    for name, go, g in zip(("du", "ddelta", "dA", "dB", "dC", "dD", "dbias"), grads, gr):
        check(f"official ss {shape} {softplus} {name}", go, g, bf)

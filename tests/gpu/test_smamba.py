"""Sparse Mamba on the GPU: the Triton kernels of `kernels.companion_scan` (op.py; what the mixer
runs on CUDA) on fp64 (smamba's default scan dtype), fp32 and bf16 inputs, odd lengths, against an
fp64 reference of the same inputs: the dense token-by-token definition (matrix_exp of the
companion A) where it is affordable, else the fp64 chunked scan, which the CPU tests pin to the
dense definition (tests/test_smamba.py). Outputs, final states and every input gradient: fp64
inputs within 1e-9; fp32 / bf16 within the rule of `_tol.py` or 2x the chunked reference's own
error in the same dtype on the CPU (with clustered roots the eigenbasis loses digits below fp64,
docs/smamba.md "Precision"). Then the whole mixer on CUDA vs the same weights on the CPU in fp64."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from hades.config import ModelConfig
from hades.models.mixers import build_mixer
from kernels.companion_scan import (
    companion_coefficients,
    companion_matrix,
    companion_scan,
    companion_scan_chunked,
    companion_scan_loop,
    quadratic_roots,
)

from ._tol import BF16_TOL, FP32_TOL, rel_err

DEV = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"

SHAPES = [(2, 63, 64, 16), (1, 300, 96, 8), (2, 1000, 256, 16), (1, 41, 50, 6)]  # batch, seqlen, channels, N
LOOP_MAX_TOKENS = 64  # the dense reference: one (b, c, N, N) matrix_exp per token


def _inputs(shape, dtype, form, seed=0):
    b, t, c, n = shape
    gen = torch.Generator(device=DEV).manual_seed(seed)
    # fp64 inputs: the parameters too (as the mixer's fp64 scan: alpha, beta in fp64), else the
    # complex64 roots' rounding is what the test measures
    pdt = torch.float64 if dtype == torch.float64 else torch.float32
    r = lambda *s: torch.randn(*s, device=DEV, generator=gen, dtype=pdt)  # noqa: E731
    leaf = lambda v: v.detach().requires_grad_()  # noqa: E731
    # stable factors: Butterworth-like complex pairs and a few real pairs, as in training
    alpha = F.softplus(r(c, n // 2) * 0.5 + 0.5)
    beta = F.softplus(r(c, n // 2) * 0.5 + 0.5)
    return {
        "u": leaf(r(b, t, c).to(dtype)), "delta": leaf(F.softplus(r(b, t, c) - 2.0).to(dtype)),
        "X": leaf(r(b, t, n).to(dtype)), "D": leaf(r(c)), "alpha": leaf(alpha), "beta": leaf(beta),
        "initial_state": leaf(torch.complex(r(b, c, n), r(b, c, n)) * 0.1),
    }


def _chunked(d, form, chunk_size=32, scan=companion_scan_chunked):
    lam = quadratic_roots(d["alpha"], d["beta"])
    return scan(d["u"], d["delta"], lam, d["X"], d["D"], form, d["initial_state"], chunk_size)


def _grads(out, leaves, cot):
    loss = (out[0].double() * cot[0]).sum() + (torch.view_as_real(out[1]).double() * cot[1]).sum()
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("form", ["controllable", "observable"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["fp64", "fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_triton_scan_matches_fp64_reference(shape, dtype, form):
    inp = _inputs(shape, dtype, form)
    names = list(inp)
    y, fin = _chunked(inp, form, scan=companion_scan)  # the Triton op on CUDA
    to64 = lambda v: v.detach().to(torch.complex128 if v.is_complex() else torch.float64).requires_grad_()  # noqa: E731
    ref = {k: to64(v) for k, v in inp.items()}
    yr, fr = _chunked(ref, form, chunk_size=16)  # another chunking: the split is invisible
    # the reference on the CPU in the same dtype: the kernels may add their own rounding, not more
    # (the 2x rule of _tol.py, for fp32 too: with clustered roots the eigenbasis itself loses
    # digits in fp32, docs/smamba.md "Precision")
    low = {k: v.detach().cpu().requires_grad_() for k, v in inp.items()}
    yl, fl = _chunked(low, form, chunk_size=16)
    cot = (torch.randn_like(yr), torch.randn_like(torch.view_as_real(fr)))
    g_ours = _grads((y, fin), [inp[k] for k in names], cot)
    g_ref = _grads((yr, fr), [ref[k] for k in names], cot)
    g_low = _grads((yl, fl), [low[k] for k in names], tuple(c.cpu() for c in cot))
    tag = f"smamba {form} {shape}"

    def check2(name, out, r, cpu):
        err, err_cpu = rel_err(out, r), rel_err(cpu.to(r.device), r)
        base = {torch.float64: 1e-9, torch.float32: FP32_TOL, torch.bfloat16: BF16_TOL}[dtype]
        tol = max(base, 2 * err_cpu)
        assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.1e} (CPU, same dtype: {err_cpu:.1e})"

    check2(f"{tag} y", y, yr, yl)
    check2(f"{tag} final_state", torch.view_as_real(fin), torch.view_as_real(fr), torch.view_as_real(fl))
    for k, go, gr, gl in zip(names, g_ours, g_ref, g_low):
        as_real = (lambda v: torch.view_as_real(v)) if go.is_complex() else (lambda v: v)  # noqa: E731
        check2(f"{tag} d{k}", as_real(go), as_real(gr), as_real(gl))
    b, t, c, n = shape
    if t <= LOOP_MAX_TOKENS:  # the fp64 reference is itself the definition here
        A = companion_matrix(companion_coefficients(ref["alpha"], ref["beta"]), form)
        y_loop, _ = companion_scan_loop(ref["u"], ref["delta"], A, ref["X"], ref["D"], form)
        y0, _ = companion_scan_chunked(ref["u"], ref["delta"], quadratic_roots(ref["alpha"], ref["beta"]),
                                       ref["X"], ref["D"], form)
        assert rel_err(y0, y_loop) <= 1e-9


@pytest.mark.parametrize("form", ["controllable", "observable"])
def test_mixer_on_cuda_matches_cpu_fp64(form):
    cfg = ModelConfig(arch="smamba", d_model=128, d_state=16, expand=2, chunk_size=32, smamba_form=form)
    torch.manual_seed(0)
    mixer = build_mixer(cfg, 0)
    ref = build_mixer(cfg, 0).double()
    ref.load_state_dict({k: v.double() for k, v in mixer.state_dict().items()})
    mixer = mixer.to(DEV)
    u = torch.randn(2, 301, cfg.d_model)
    out = mixer(u.to(DEV)).y
    out_ref = ref(u.double()).y
    assert rel_err(out.cpu(), out_ref) <= 1e-4
    out.square().sum().backward()
    out_ref.square().sum().backward()
    grads_ref = dict(ref.named_parameters())
    for k, p in mixer.named_parameters():
        err = rel_err(p.grad.cpu(), grads_ref[k].grad)
        assert err <= 1e-3, f"{form}: d{k} rel err {err:.2e}"
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=DEV == "cuda"):
        out_bf16 = mixer(u.to(DEV)).y
    assert rel_err(out_bf16.float().cpu(), out_ref) <= 5e-2, "bf16 autocast forward"

"""HADES's fused in_proj + router product (`kernels.router`).

On CPU the public function is the plain-torch reference, and the HADES mixer's two forward
paths (fused op / plain composition) are the same function. Then the Triton op == the reference in
Triton's CPU interpreter, forward and every gradient (u, W_in, W_r as a column slice of h_proj's
weight), rows and columns that are not a multiple of the tiles, R not a power of 2, bf16 and fp32
in_proj (z and dW_in from the router kernel's bf16 copy of u, which the interpreter truncates
where a GPU rounds to nearest: against u truncated), NaN-poisoned outputs. Skipped where Triton is not installed (CI); the interpreter has to
be chosen before Triton's `jit` wraps the kernels, so that part runs in a subprocess:
`TRITON_INTERPRET=1 python tests/test_router.py`.
"""

from __future__ import annotations

import pytest
import torch
from _interpreter import interpreter_main, needs_triton, range_shim, run_in_interpreter

from kernels.router import in_router_proj, in_router_proj_ref

# (batch, seqlen, D, F, R), in_proj dtype
CASES = [((2, 37, 80, 70, 24), "float32"), ((1, 130, 64, 33, 32), "bfloat16"), ((3, 5, 16, 16, 5), "bfloat16")]


def _rel(a, ref) -> float:
    a, ref = a.detach().double(), ref.detach().double()
    return float("inf") if not torch.isfinite(a).all() else ((a - ref).norm() / ref.norm()).item()


def _run(fn, b, t, d, f, r, dtype, seed, truncate_u=False):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, t, d, generator=g, requires_grad=True)
    if truncate_u:  # u's values rounded toward 0 to bf16, as the interpreter's cast does (a GPU's rounds to nearest)
        u = (u.detach().view(torch.int32) & -65536).view(torch.float32).requires_grad_(True)
    w_in = torch.randn(f, d, generator=g, requires_grad=True)
    h_w = torch.randn(r, d + 7, generator=g, requires_grad=True)  # W_r: a column slice, as in HadesMixer
    z, v = fn(u, w_in, h_w[:, :d], dtype)
    gz, gv = torch.randn(z.shape, generator=g), torch.randn(v.shape, generator=g)
    grads = torch.autograd.grad((z.float() * gz).sum() + (v * gv).sum(), [u, w_in, h_w])
    return [z, v, *grads]


def test_cpu_is_the_reference_and_dtypes():
    b, t, d, f, r = 2, 9, 16, 12, 6
    for dt in (torch.float32, torch.bfloat16):
        z, v, *g = _run(in_router_proj, b, t, d, f, r, dt, 0)
        z2, v2, *g2 = _run(in_router_proj_ref, b, t, d, f, r, dt, 0)
        assert z.dtype == dt and v.dtype == torch.float32 and z.shape == (b, t, f) and v.shape == (b, t, r)
        for a, ref in zip([z, v, *g], [z2, v2, *g2]):
            assert torch.equal(a, ref)


@pytest.mark.parametrize("variant", ["hades", "hades_shared_only"])
def test_hades_mixer_fused_projection_is_the_plain_composition(monkeypatch, variant):
    """HadesMixer._projections on the fast path (the fused op; on CPU it dispatches to the
    reference, so this checks the wiring: weights, the autocast dtype) == its plain path, forward
    and backward, under bf16 autocast and without; with Q = 0 too, whose scores still feed
    L_balance."""
    from test_ssm_mixers import small_cfg

    from hades.models.mixers.hades import HadesMixer

    mixer = HadesMixer(small_cfg(variant), 0)
    params = [mixer.in_proj.weight, mixer.h_proj.weight]
    for autocast in (True, False):
        res = []
        for fast in (True, False):
            monkeypatch.setattr(mixer, "use_fast_path", lambda x, fast=fast: fast)
            u = torch.randn(2, 7, mixer.cfg.d_model, generator=torch.Generator().manual_seed(0), requires_grad=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                z, v = mixer._projections(u)
            res.append((z, v, *torch.autograd.grad(z.float().sum() + v.sum(), [u, *params])))
        (z1, v1, *g1), (z2, v2, *g2) = res
        assert z1.dtype == z2.dtype == (torch.bfloat16 if autocast else torch.float32) and v1.dtype == v2.dtype == torch.float32
        assert torch.equal(z1, z2) and torch.allclose(v1, v2, rtol=1e-6, atol=1e-6)
        for a, b in zip(g1, g2):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def _interpreter_checks() -> list[dict]:
    range_shim()
    import kernels._buffers
    from kernels.router import op as router_op
    from kernels.router.op import in_router_proj as op

    kernels._buffers.POISON_OUTPUTS = True
    out = []
    names = ["z", "v", "du", "dW_in", "dW_r"]
    # du's two kernels: the row-streaming default (small tiles: several steps per program), the tile one
    layouts = [("rows", {"du_layout": "rows", "du_rows": (16, 32, 4, 2)}), ("tile", {"du_layout": "tile"})]
    for i, (((b, t, d, f, r), dt), (lay, cfg)) in enumerate((c, lay) for lay in layouts for c in CASES):
        router_op.CONFIG.update(cfg)
        got = _run(op, b, t, d, f, r, getattr(torch, dt), i)
        ref = _run(in_router_proj_ref, b, t, d, f, r, getattr(torch, dt), i)
        if dt == "bfloat16":  # z and dW_in read the router kernel's bf16 copy of u: against u truncated
            ref_t = _run(in_router_proj_ref, b, t, d, f, r, getattr(torch, dt), i, truncate_u=True)
            ref = [ref_t[0], ref[1], ref[2], ref_t[3], ref[4]]
        out += [{"name": f"{lay} {dt} {(b, t, d, f, r)} {n}", "err": _rel(a, e), "tol": 1e-5}
                for n, a, e in zip(names, got, ref)]
    return out


@needs_triton
def test_triton_op_in_interpreter():
    results = run_in_interpreter(__file__, timeout=600)
    assert len(results) == 2 * 5 * len(CASES)


if __name__ == "__main__":
    interpreter_main(_interpreter_checks)

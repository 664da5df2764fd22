"""Chain of trust, first link for Mamba's S6: the token loop (the equation) == the chunked scan.

fp64, tight tolerance, outputs, final states and every gradient (u, delta, A, B, C, D, initial
state), odd lengths and lengths that are not a multiple of the chunk.

Then the Triton forward "split" (`selective_scan_fwd_split_kernel`) == the fp64 loop in Triton's
CPU interpreter, on small shapes: 1, 2, 4, 8 lanes per channel, one and two warps, lengths with and
without tokens after the last pair of whole time tiles, or shorter than one pair, channels that are
not a multiple of the program's, N = 5, 6, 12 (masked states, two state chunks per lane), bf16 B
and C read as pairs (contiguous and strided) or not (refused for an odd stride, or switched off) or
converted to fp32 first, with and without D and an initial state, and the gradients of the existing
backward from the states this forward stores (time tiles shorter and longer than the backward's).
Skipped where Triton is not installed (CI). The interpreter has to be chosen before Triton's `jit`
wraps the kernel, so this part runs in a subprocess with TRITON_INTERPRET=1: `python
tests/test_selective_scan_reference.py`.
"""

from __future__ import annotations

import pytest
import torch
from _interpreter import interpreter_main, needs_triton, range_shim, run_in_interpreter
from _ss_inputs import NAMES, scan_args, split_case_inputs

from kernels.selective_scan import selective_scan, selective_scan_chunked, selective_scan_loop

TOL = dict(rtol=1e-9, atol=1e-10)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)


def make_inputs(b=2, t=63, c=6, n=5, dtype=torch.float64, seed=0, init_state=True, with_D=True, strong=False):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    # S4D-real-like A = -(1..n) per channel, perturbed; delta in (0.01, 0.51). `strong` makes
    # delta * |A| reach ~80 per token: decays underflow to 0 and the chunk's total log-decay
    # reaches thousands, which would overflow a scan that divides by cumulative decays.
    scale = 10.0 if strong else 1.0
    A = -(torch.arange(1, n + 1, dtype=dtype) * (1 + 0.1 * torch.rand(c, n, generator=gen, dtype=dtype)))
    inputs = {
        "u": rnd(b, t, c),
        "delta": (torch.rand(b, t, c, generator=gen, dtype=dtype) * 0.5 + 0.01) * scale,
        "A": A,
        "B": rnd(b, t, n),
        "C": rnd(b, t, n),
        "D": rnd(c) if with_D else None,
        "initial_state": rnd(b, c, n) if init_state else None,
    }
    for v in inputs.values():
        if v is not None:
            v.requires_grad_(True)
    return inputs


def run_with_grads(fn, inputs, seed=1, **kw):
    y, final = fn(**inputs, **kw)
    gen = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    gf = torch.randn(final.shape, generator=gen, dtype=final.dtype)
    names = [k for k, v in inputs.items() if v is not None]
    grads = torch.autograd.grad((y * gy).sum() + (final * gf).sum(), [inputs[k] for k in names])
    return y, final, dict(zip(names, grads))


@pytest.mark.parametrize(
    "t, chunk, init_state, with_D, strong",
    [
        (63, 8, True, True, False),  # odd length, padded last chunk
        (64, 16, False, True, False),  # exact multiple
        (5, 16, True, False, False),  # shorter than one chunk
        (29, 1, True, True, False),  # chunk of one token
        (63, 16, True, True, True),  # very strong decays
    ],
)
def test_chunked_matches_loop(t, chunk, init_state, with_D, strong):
    inputs = make_inputs(t=t, init_state=init_state, with_D=with_D, strong=strong)
    y_ref, f_ref, g_ref = run_with_grads(selective_scan_loop, inputs)
    y, f, grads = run_with_grads(selective_scan_chunked, inputs, chunk_size=chunk)
    assert torch.isfinite(y).all() and torch.isfinite(f).all()
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(f, f_ref, **TOL)
    assert grads.keys() == g_ref.keys()
    for name in g_ref:
        torch.testing.assert_close(grads[name], g_ref[name], **TOL, msg=lambda m, n=name: f"grad {n}: {m}")


def test_initial_state_continues_a_sequence():
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(t=41, init_state=False).items()}
    args = {k: v for k, v in inputs.items() if v is not None}
    y, f = selective_scan_chunked(**args, chunk_size=8)
    k = 17
    seq = ("u", "delta", "B", "C")
    first = {n: (v[:, :k] if n in seq else v) for n, v in args.items()}
    second = {n: (v[:, k:] if n in seq else v) for n, v in args.items()}
    y1, f1 = selective_scan_chunked(**first, chunk_size=8)
    y2, f2 = selective_scan_chunked(**second, initial_state=f1, chunk_size=8)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y, **TOL)
    torch.testing.assert_close(f2, f, **TOL)


def test_fp32_chunked_is_as_accurate_as_the_fp32_loop():
    """In fp32 both forms should sit within a few ulps of the fp64 truth."""
    inputs64 = {k: (v.detach() if v is not None else None) for k, v in make_inputs(t=200, c=16, n=16).items()}
    inputs32 = {k: (v.float() if v is not None else None) for k, v in inputs64.items()}
    y64, _ = selective_scan_loop(**inputs64)
    err_loop = (selective_scan_loop(**inputs32)[0].double() - y64).abs().max()
    err_chunk = (selective_scan_chunked(**inputs32, chunk_size=16)[0].double() - y64).abs().max()
    assert err_chunk <= 4 * err_loop + 1e-6, f"chunked fp32 error {err_chunk:.2e} vs loop {err_loop:.2e}"


def test_public_entry_point_uses_the_reference_on_cpu():
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(t=30).items()}
    y, f = selective_scan(**inputs, chunk_size=8)
    y_ref, f_ref = selective_scan_chunked(**inputs, chunk_size=8)
    assert torch.equal(y, y_ref) and torch.equal(f, f_ref)


# -- the Triton forward "split" in the interpreter ------------------------------------------

# name, (batch, seqlen, channels, dstate), dtype, CONFIG["fwd_split"] (BLOCK_T, NG, num_warps, pairs), options
# (B and C as "strided" slices of one projection with an even row stride, "odd" with an odd one;
# bc_fp32: B and C converted to fp32 before the kernel; nbuf: NBUF, the ring of tile buffers, 2 if
# not given)
def test_public_entry_takes_the_time_steps_activation():
    """On the CPU the public selective_scan with delta_bias / delta_softplus is the chunked scan
    of softplus(delta + bias) in fp32 (`delta_activation`); a bias alone is added, no softplus;
    gradients reach the pre-activation and the bias."""
    import torch.nn.functional as F

    from kernels.selective_scan.reference import delta_activation

    d = make_inputs(dtype=torch.float32, seed=3)
    raw = (torch.randn(d["u"].shape, generator=torch.Generator().manual_seed(4)) - 0.5).requires_grad_(True)
    bias = torch.randn(d["u"].shape[-1], generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    args = (d["u"], raw, d["A"], d["B"], d["C"], d["D"])
    y, fin = selective_scan(*args, delta_bias=bias, delta_softplus=True)
    yr, fr = selective_scan_chunked(d["u"], F.softplus(raw + bias), *args[2:])
    assert torch.equal(y, yr) and torch.equal(fin, fr)
    assert torch.equal(delta_activation(raw, bias, True), F.softplus(raw + bias))
    step, shift = raw.detach().abs() * 0.3, bias.detach().abs() * 0.1  # (a bias alone: delta stays > 0)
    y_b, _ = selective_scan(d["u"], step, *args[2:], delta_bias=shift)
    assert torch.equal(y_b, selective_scan_chunked(d["u"], step + shift, *args[2:])[0])
    g_raw, g_bias = torch.autograd.grad(y.sum(), [raw, bias])
    assert torch.isfinite(g_raw).all() and g_raw.abs().sum() > 0 and g_bias.abs().sum() > 0
    assert delta_activation(raw) is raw  # neither: the input itself


SPLIT_CASES = [
    ("ng4_init_ring3", (1, 29, 36, 16), "float32", (4, 4, 1, True), {"init": True, "nbuf": 3}),
    ("ng2_2warps_noD", (1, 21, 48, 16), "float32", (4, 2, 2, True), {"noD": True}),
    ("ng8_tile2_no_tail", (1, 16, 8, 16), "float32", (2, 8, 1, True), {"init": True}),
    ("ng1", (1, 13, 40, 16), "float32", (4, 1, 1, True), {}),
    ("bf16_pairs_strided", (1, 23, 24, 16), "bfloat16", (8, 2, 2, True), {"bc": "strided"}),
    ("bf16_pairs_off", (2, 11, 24, 16), "bfloat16", (4, 4, 1, False), {"init": True}),
    ("bf16_odd_stride", (1, 15, 16, 16), "bfloat16", (4, 4, 1, True), {"bc": "odd"}),
    ("bf16_bc_fp32", (1, 15, 16, 16), "bfloat16", (4, 2, 1, True), {"bc": "strided", "bc_fp32": True}),
    ("dstate5_ring3", (1, 17, 20, 5), "float32", (4, 4, 1, True), {"init": True, "nbuf": 3}),
    ("dstate6_bf16", (1, 17, 20, 6), "bfloat16", (2, 2, 1, True), {}),
    ("dstate12_bf16", (1, 15, 20, 12), "bfloat16", (4, 2, 1, True), {}),
    ("grad_ng4_ring3_tail_only", (1, 11, 12, 16), "float32", (4, 4, 1, True), {"init": True, "grad": True, "nbuf": 3}),
    ("grad_ring4_tile2", (1, 37, 16, 16), "float32", (2, 4, 1, True), {"grad": True, "nbuf": 4}),
    ("ring3_shorter_than_the_ring", (1, 3, 8, 16), "bfloat16", (4, 4, 1, True), {"nbuf": 3}),
    ("grad_tile16", (1, 19, 8, 16), "float32", (16, 2, 1, True), {"init": True, "grad": True}),
    ("grad_bf16_2warps", (1, 11, 12, 16), "bfloat16", (2, 4, 2, True), {"grad": True}),
    ("softplus_bias_grad", (1, 19, 12, 16), "float32", (4, 4, 1, True), {"grad": True, "softplus": "bias", "init": True}),
    ("softplus_bf16_ring3_grad", (2, 29, 8, 16), "bfloat16", (4, 4, 1, True), {"softplus": "nobias", "nbuf": 3, "grad": True}),
    # the forward without a gradient (evaluation) with the time step's softplus in the kernel
    ("softplus_bias_bf16_eval", (1, 23, 24, 16), "bfloat16", (8, 2, 2, True), {"softplus": "bias", "init": True}),
    ("softplus_eval_masked_c", (2, 13, 20, 5), "float32", (4, 4, 1, True), {"softplus": "nobias"}),
]
SPLIT_TOL = {"float32": 1e-5, "bfloat16": 1e-2}  # relative L2; bf16 y: see _split_checks


def _rel(a, ref) -> float:
    a, ref = a.detach().double(), ref.detach().double()
    return float("inf") if not torch.isfinite(a).all() else ((a - ref).norm() / ref.norm()).item()


def _truncate_bf16(x):
    """x as bf16 by dropping the low 16 bits of its fp32 (how the interpreter converts)."""
    bits = x.float().contiguous().view(torch.int32) & -65536
    return bits.view(torch.float32).to(torch.bfloat16)


def _split_checks() -> list[dict]:
    """Run in a process with TRITON_INTERPRET=1 (NaN-poisoned outputs). Each case: y and the final
    state against the fp64 loop on the same (rounded) inputs; bf16 y within 1.01x the error of
    truncating the fp64 y to bf16 (the kernel computes in fp32 and converts once; the interpreter
    truncates, a GPU rounds to nearest, which errs less); with "grad", every gradient through the
    backward kernel, and y equal to that of the forward without states."""
    range_shim()
    import kernels._buffers
    from kernels.selective_scan import op

    kernels._buffers.POISON_OUTPUTS = True
    out = []
    for name, (b, t, c, n), dt, (block_t, ng, warps, pairs), opt in SPLIT_CASES:
        op.CONFIG["fwd"] = dict(op.CONFIG["fwd"], layout="split")
        op.CONFIG["fwd_split"] = dict(BLOCK_T=block_t, NG=ng, num_warps=warps, pairs=pairs, bc_fp32=opt.get("bc_fp32", False),
                                      NBUF=opt.get("nbuf", 2))
        op.CONFIG["fwd_split_train"] = op.CONFIG["fwd_split"]  # the training forward (states) alike
        dtype = getattr(torch, dt)
        inputs, gen = split_case_inputs(b, t, c, n, dtype, opt, seed=len(out))
        leaves = [v.requires_grad_(opt.get("grad", False)) for v in inputs if v is not None]
        args, kw = scan_args(inputs, opt)
        y, fin = op.selective_scan(*args, **kw)
        ref = [v.detach().double().requires_grad_(opt.get("grad", False)) if v is not None else None for v in inputs]
        args_r, kw_r = scan_args(ref, opt, reference=True)
        yr, fr = selective_scan_loop(*args_r, **kw_r)
        tol = SPLIT_TOL[dt]
        y_tol = 1.01 * _rel(_truncate_bf16(yr), yr) + 1e-6 if dtype != torch.float32 else tol
        out += [{"name": f"{name} y", "err": _rel(y, yr), "tol": y_tol},
                {"name": f"{name} final_state", "err": _rel(fin, fr), "tol": SPLIT_TOL["float32"]}]
        if opt.get("grad"):
            with torch.no_grad():
                y_ns, _ = op.selective_scan(*args, **kw)
            # the same kernel, storing the states or not (the time step's softplus in it either way)
            out.append({"name": f"{name} y with states == y without", "err": float(not torch.equal(y_ns, y)), "tol": 0.0})
            gy, gf = torch.randn(yr.shape, generator=gen, dtype=torch.float64), torch.randn(fr.shape, generator=gen, dtype=torch.float64)
            grads = torch.autograd.grad((y.double() * gy).sum() + (fin.double() * gf).sum(), leaves)
            grads_r = torch.autograd.grad((yr * gy).sum() + (fr * gf).sum(), [v for v in ref if v is not None])
            names = [k for k, v in zip(NAMES, inputs) if v is not None]
            out += [{"name": f"{name} d{k}", "err": _rel(g, gr), "tol": tol} for k, g, gr in zip(names, grads, grads_r)]
    return out


@needs_triton
def test_split_forward_in_interpreter():
    results = run_in_interpreter(__file__)
    n_grad = sum(1 + 5 + ("noD" not in o) + ("init" in o) + (o.get("softplus") == "bias")
                 for *_, o in SPLIT_CASES if o.get("grad"))
    assert len(results) == 2 * len(SPLIT_CASES) + n_grad


if __name__ == "__main__":
    interpreter_main(_split_checks)

"""Fused RMS norms (kernels/norm), on the CPU.

- the reference == `RMSNorm.forward` / `GatedRMSNorm.forward` as the modules compute them
  (bit for bit, fp64, fp32 and bf16 with an fp32 weight as under autocast), outputs and gradients;
- the public entry points and the modules with use_kernel=True run the reference on CPU tensors
  (output in the input's dtype; mixed y/z dtypes give y's dtype);
- the Triton kernels == the fp64 reference in Triton's CPU interpreter, on small shapes: output,
  dx, dz and dweight; fp32, bf16 and fp16 inputs with an fp32 weight, mixed y/z dtypes, dims that
  are not powers of 2, several groups, leading dims, non-contiguous inputs and upstream
  gradients, several tiles per backward program (partial dweight sums), no rows, NaN-poisoned
  outputs. Skipped where Triton is not installed (CI). The interpreter has to be chosen before
  Triton's `jit` wraps the kernels, so this part runs in a subprocess with TRITON_INTERPRET=1:
  `python tests/test_norm_kernels.py` (the same checks, printed as JSON).
"""

from __future__ import annotations

import pytest
import torch
from _interpreter import interpreter_main, needs_triton, run_in_interpreter

from kernels.norm import gated_rms_norm, gated_rms_norm_ref, rms_norm, rms_norm_ref

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)


def _rel(a, b) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _inputs(shape, dtype, seed=0, wdtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen).to(dtype)
    z = (2 * torch.randn(*shape, generator=gen)).to(dtype)
    w = (1 + 0.3 * torch.randn(shape[-1], generator=gen)).to(wdtype)
    return x, z, w


def _run(fn, tensors, dout):
    leaves = [t.detach().requires_grad_() for t in tensors]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, dout.to(out.dtype))
    return out.detach(), grads


# -- reference == the modules ----------------------------------------------------------------

CASES = [  # (leading shape, dim, group_size)
    ((37,), 96, 96),
    ((2, 9), 1000, 1000),
    ((3, 5), 256, 64),
    ((4,), 2048, 1024),
]
DTYPES = [(torch.float64, torch.float64), (torch.float32, torch.float32), (torch.bfloat16, torch.float32)]


@pytest.mark.parametrize("dtype,wdtype", DTYPES, ids=["fp64", "fp32", "bf16_fp32w"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}x{c[1]}g{c[2]}")
def test_reference_is_the_modules_math(case, dtype, wdtype):
    # imported here: the interpreter subprocess runs this file where transformers may be missing
    from hades.models.layers import GatedRMSNorm, RMSNorm

    lead, dim, gs = case
    x, z, w = _inputs((*lead, dim), dtype, wdtype=wdtype)
    dout = torch.randn(*lead, dim, dtype=torch.float64)
    norm = RMSNorm(dim, eps=1e-5).to(wdtype)
    gated = GatedRMSNorm(dim, eps=1e-5, group_size=gs).to(wdtype)
    with torch.no_grad():
        norm.weight.copy_(w)
        gated.weight.copy_(w)
    for mod, ref_fn, args in (
        (norm, lambda x, w: rms_norm_ref(x, w, 1e-5), (x, w)),
        (gated, lambda y, z, w: gated_rms_norm_ref(y, z, w, 1e-5, gs), (x, z, w)),
    ):
        name = type(mod).__name__
        out_r, g_r = _run(ref_fn, args, dout)
        leaves = [t.detach().requires_grad_() for t in args[:-1]]  # the module holds the weight
        out_m = mod(*leaves)
        g_m = torch.autograd.grad(out_m, [*leaves, mod.weight], dout.to(out_m.dtype))
        assert out_r.dtype == out_m.dtype == dtype, f"{name}: output dtype {out_r.dtype} vs module {out_m.dtype}, input {dtype}"
        assert torch.equal(out_r, out_m), f"{name}: reference != module, rel {_rel(out_r, out_m):.2e}"
        for i, (a, b) in enumerate(zip(g_r, g_m)):
            assert a.dtype == b.dtype and torch.equal(a, b), f"{name}: gradient {i} differs, rel {_rel(a, b):.2e}"


def test_cpu_entry_points_and_use_kernel_modules_run_the_reference():
    from hades.models.layers import GatedRMSNorm, RMSNorm

    x, z, w = _inputs((2, 7, 128), torch.bfloat16)
    assert torch.equal(rms_norm(x, w), rms_norm_ref(x, w))
    assert torch.equal(gated_rms_norm(x, z, w, group_size=64), gated_rms_norm_ref(x, z, w, group_size=64))
    assert rms_norm(x, w).dtype == torch.bfloat16 and gated_rms_norm(x, z, w).dtype == torch.bfloat16
    norm, gated = RMSNorm(128), GatedRMSNorm(128, group_size=64)
    out0, gout0 = norm(x), gated(x, z)
    norm.use_kernel = gated.use_kernel = True
    assert torch.equal(norm(x), out0) and torch.equal(gated(x, z), gout0), "use_kernel must not change CPU results"
    # mixed dtypes of y and z: fp32 arithmetic, y's dtype out (as the module)
    gated.use_kernel = False
    with torch.no_grad():
        gated.weight.copy_(w)
    out = gated_rms_norm(x, z.float(), w, group_size=64)
    assert out.dtype == torch.bfloat16 and torch.equal(out, gated(x, z.float()))


def test_fp64_and_oversized_rows_take_the_reference():
    """The public entry routes fp64 (and, on CUDA, rows longer than op.MAX_GROUP) to the reference."""
    x, z, w = _inputs((3, 64), torch.float64, wdtype=torch.float64)
    assert torch.equal(gated_rms_norm(x, z, w), gated_rms_norm_ref(x, z, w))
    assert torch.equal(rms_norm(x, w, 1e-6), rms_norm_ref(x, w, 1e-6))


# -- the Triton kernels in the CPU interpreter -----------------------------------------------

# (name, kind, leading shape, dim, group_size, y dtype, z dtype, weight dtype, layout, tiles)
INTERPRETER_CASES = [
    ("rms_96", "rms", (37,), 96, None, "float32", None, "float32", "contiguous", None),
    ("rms_1000_lead", "rms", (2, 5), 1000, None, "float32", None, "float32", "contiguous", None),
    ("rms_bf16_fp32w", "rms", (2, 9), 96, None, "bfloat16", None, "float32", "contiguous", None),
    ("rms_fp16", "rms", (13,), 64, None, "float16", None, "float16", "contiguous", None),
    ("rms_small_tiles", "rms", (2, 63), 96, None, "float32", None, "float32", "contiguous", 128),
    ("rms_transposed", "rms", (6, 5), 48, None, "float32", None, "float32", "transposed", None),
    ("rms_row_stride", "rms", (3, 11), 80, None, "bfloat16", None, "float32", "row_stride", 256),
    ("rms_no_rows", "rms", (0,), 64, None, "float32", None, "float32", "contiguous", None),
    ("gated_one_group", "gated", (21,), 96, None, "float32", "float32", "float32", "contiguous", None),
    ("gated_4_groups", "gated", (2, 7), 256, 64, "float32", "float32", "float32", "contiguous", 128),
    ("gated_bf16_2_groups", "gated", (2, 11), 200, 100, "bfloat16", "bfloat16", "float32", "contiguous", None),
    ("gated_mixed_y_fp32_z_bf16", "gated", (9,), 128, 64, "float32", "bfloat16", "float32", "contiguous", None),
    ("gated_mixed_y_bf16_z_fp32", "gated", (9,), 128, 64, "bfloat16", "float32", "float32", "contiguous", None),
    ("gated_z_sliced", "gated", (2, 13), 96, 48, "float32", "float32", "float32", "row_stride", 64),
    ("gated_transposed", "gated", (4, 6), 40, 20, "bfloat16", "bfloat16", "float32", "transposed", None),
]
TRITON_TOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}  # relative, L2, vs fp64 on the same inputs


def _layout(t: torch.Tensor, layout: str, seed: int) -> torch.Tensor:
    """The same values in another memory layout: transposed storage, or rows of a wider buffer
    (z sliced out of a projection) whose other columns are NaN."""
    if layout == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "row_stride":
        wide = torch.full((*t.shape[:-1], t.shape[-1] + 24), float("nan"), dtype=t.dtype)
        wide[..., 7:7 + t.shape[-1]] = t
        return wide[..., 7:7 + t.shape[-1]]
    return t


def _interpreter_checks() -> list[dict]:
    """Run in a process with TRITON_INTERPRET=1: per case, out and every gradient against the
    fp64 reference on the same (rounded) inputs and upstream gradient (non-contiguous), each
    within the tolerance of its own dtype, and the output / gradient dtypes."""
    import kernels._buffers
    from kernels.norm import op

    kernels._buffers.POISON_OUTPUTS = True  # every output buffer starts as NaN
    out = []
    for i, (name, kind, lead, dim, gs, ydt, zdt, wdt, layout, tile) in enumerate(INTERPRETER_CASES):
        op.CONFIG.update(FWD_TILE=tile or 4096, BWD_TILE=tile or 4096)
        gen = torch.Generator().manual_seed(i)
        y = torch.randn(*lead, dim, generator=gen).to(getattr(torch, ydt))
        z = (2 * torch.randn(*lead, dim, generator=gen)).to(getattr(torch, zdt or ydt))
        w = (1 + 0.3 * torch.randn(dim, generator=gen)).to(getattr(torch, wdt))
        # non-contiguous upstream gradient, rounded to the output's dtype for both sides
        dout = torch.randn(dim, *lead, generator=gen).movedim(0, -1).to(y.dtype).double()
        y, z = _layout(y, layout, i), _layout(z, layout, i)
        if kind == "rms":
            args, fn = (y, w), lambda y, w: op.rms_norm(y, w, 1e-5)
            ref = lambda y, w: rms_norm_ref(y, w, 1e-5)  # noqa: E731
        else:
            args, fn = (y, z, w), lambda y, z, w, gs=gs: op.gated_rms_norm(y, z, w, 1e-5, gs)
            ref = lambda y, z, w, gs=gs: gated_rms_norm_ref(y, z, w, 1e-5, gs)  # noqa: E731
        o, g = _run(fn, args, dout)
        o_r, g_r = _run(ref, [a.double() for a in args], dout)
        tol = TRITON_TOL[ydt]
        dtypes_ok = o.dtype == y.dtype and all(a.dtype == b.dtype for a, b in zip(g, args))
        out.append({"name": f"{name} dtypes", "err": float(not dtypes_ok), "tol": 0.0})
        if o.numel() == 0:
            out.append({"name": f"{name} no rows: empty out, zero dweight", "err": float(o.shape != y.shape or g[-1].abs().sum() != 0), "tol": 0.0})
            continue
        out.append({"name": f"{name} out", "err": _rel(o, o_r), "tol": tol})
        for k, a, b, t in zip(("dy", "dz", "dw") if kind == "gated" else ("dx", "dw"), g, g_r, args):
            out.append({"name": f"{name} {k}", "err": _rel(a, b), "tol": TRITON_TOL[str(t.dtype).replace("torch.", "")]})
    op.CONFIG.update(FWD_TILE=4096, BWD_TILE=4096)
    return out + _residual_checks() + _holder_checks()


def _residual_checks() -> list[dict]:
    """Three pre-norm blocks x <- x + f(rms_norm(x)), f a product and a tanh (bf16 like the
    mixers' outputs): with the residual's gradient added in the norm's backward kernel
    (residual_add and a ResidualGrad holder) == with x + y, fp32 residual stream; every
    gradient (the input and the norms' weights), and no holder left holding a gradient."""
    from kernels.norm import op

    gen = torch.Generator().manual_seed(11)
    x0 = torch.randn(2, 9, 64, generator=gen)
    ws = [(1 + 0.3 * torch.randn(64, generator=gen)) for _ in range(3)]
    ms = [0.2 * torch.randn(64, 64, generator=gen) for _ in range(3)]
    dout = torch.randn(2, 9, 64, generator=gen)

    def blocks(fused, tap=False):
        x = x0.clone().requires_grad_(True)
        wl = [w.clone().requires_grad_(True) for w in ws]
        h, holders, extra = x, [], 0.0
        for w, m in zip(wl, ms):
            if tap and h is not x:  # another consumer of the residual stream, with a gradient
                extra = extra + (h * dout).sum()
            res = op.ResidualGrad() if fused else None
            y = torch.tanh(op.rms_norm(h, w, 1e-5, residual=res) @ m).to(torch.bfloat16)
            h = op.residual_add(h, y, res) if fused else h + y  # (fused: the Triton add, fp32 + bf16)
            holders.append(res)
        grads = torch.autograd.grad((h * dout).sum() + extra, [x, *wl])
        return h.detach(), grads, holders

    op.CONFIG["LOW_GRAD"] = False
    (h_ref, ref, _), (h_got, got, holders) = blocks(False), blocks(True)
    left = {"name": "residual holders emptied", "err": float(any(r.g is not None for r in holders)), "tol": 0.0}
    same = {"name": "residual_add's Triton forward == x + y", "err": float(not torch.equal(h_got, h_ref)), "tol": 0.0}
    out = [left, same] + [{"name": f"residual_add d{k}", "err": _rel(a, b), "tol": 1e-6}
                          for k, a, b in zip(("x", "w0", "w1", "w2"), got, ref)]
    # the next norm's dx also written in bf16 for the add's backward (2 of the 3 adds: the last
    # one's output is not normed): the interpreter truncates that copy where torch's cast rounds
    # to nearest, so within bf16's rounding here (bit-equal on a GPU: tests/gpu)
    op.CONFIG["LOW_GRAD"], op.LOW_GRAD_USED[0] = True, 0
    _, got_low, _ = blocks(True)
    out.append({"name": "residual_add took the next norm's bf16 dx twice", "err": float(op.LOW_GRAD_USED[0] != 2),
                "tol": 0.0})
    out += [{"name": f"residual_add, bf16 dx from the norm, d{k}", "err": _rel(a, b), "tol": 1e-2}
            for k, a, b in zip(("x", "w0", "w1", "w2"), got_low, ref)]
    # the stream also read elsewhere: its gradient is no longer the norm's dx alone, so the add
    # must cast it itself (bit-equal to x + y's gradients)
    op.LOW_GRAD_USED[0] = 0
    (_, ref_tap, _), (_, got_tap, _) = blocks(False, tap=True), blocks(True, tap=True)
    out.append({"name": "a tapped stream: no bf16 dx taken", "err": float(op.LOW_GRAD_USED[0] != 0), "tol": 0.0})
    return out + [{"name": f"residual_add, tapped stream, d{k}", "err": _rel(a, b), "tol": 1e-6}
                  for k, a, b in zip(("x", "w0", "w1", "w2"), got_tap, ref_tap)]


def _holder_checks() -> list[dict]:
    """HADES's step 8-9: slots = gated_rms_norm(y, z, w) feeding a product and the diversity
    loss; with the loss's gradient left in a GradHolder and added inside the norm's backward
    kernel == with autograd adding it (every gradient), the holder emptied; and a holder that
    its consumer never filled (the diversity loss not differentiated) is no gradient."""
    from kernels.diversity import op as div_op
    from kernels.norm import op

    gen = torch.Generator().manual_seed(12)
    y0, z0 = torch.randn(2, 9, 64, generator=gen), 2 * torch.randn(2, 9, 64, generator=gen)
    w0, dout = 1 + 0.3 * torch.randn(64, generator=gen), torch.randn(2, 9, 64, generator=gen)

    def chain(fused, with_div=True):
        leaves = [t.clone().requires_grad_(True) for t in (y0, z0, w0)]
        hold = op.GradHolder() if fused else None
        slots = op.gated_rms_norm(*leaves, 1e-5, 16, dout_extra=hold)
        loss = (slots * dout).sum()
        if with_div:
            loss = loss + 3.0 * div_op.diversity_loss(slots.view(2, 9, 4, 16), grad_to=hold)
        return torch.autograd.grad(loss, leaves), hold

    (ref, _), (got, hold) = chain(False), chain(True)
    (ref_nd, _), (got_nd, _) = chain(False, False), chain(True, False)
    out = [{"name": "grad holder emptied", "err": float(hold.g is not None), "tol": 0.0}]
    out += [{"name": f"norm + diversity via holder d{k}", "err": _rel(a, b), "tol": 1e-6}
            for k, a, b in zip(("y", "z", "w"), got, ref)]
    return out + [{"name": f"unfilled holder d{k}", "err": _rel(a, b), "tol": 0.0} for k, a, b in zip(("y", "z", "w"), got_nd, ref_nd)]


@needs_triton
def test_triton_kernels_in_interpreter():
    results = run_in_interpreter(__file__)
    n_grads = sum(1 if c[0] == "rms_no_rows" else 4 if c[1] == "gated" else 3 for c in INTERPRETER_CASES)
    assert len(results) == len(INTERPRETER_CASES) + n_grads + 6 + 10 + 7, f"{len(results)} checks"


if __name__ == "__main__":
    interpreter_main(_interpreter_checks)

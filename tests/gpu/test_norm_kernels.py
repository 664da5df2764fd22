"""Fused RMS norms (kernels/norm) on the GPU: the Triton ops vs the fp64 reference on the same
(rounded) inputs, output and every gradient (dx, dz, dweight) under a random upstream gradient;
the training shapes (16384 rows of 1024 / 2048, 1 or 2 groups), odd widths, leading dims,
non-contiguous inputs, bf16 / fp16 inputs with an fp32 weight (autocast), mixed y / z dtypes,
NaN-poisoned outputs; the public entry points' dispatch; deterministic dweight; and the modules
with use_kernel True == False (outputs and parameter gradients, also under bf16 autocast).

Tolerances (relative, L2): fp32 <= 1e-5 (no matrix products: only the reduction order and
rsqrt rounding differ); half inputs <= 1e-2 or <= 2x the error of the plain-torch modules' math
fed the same inputs (_tol.py's rule). fp32 gradients of half inputs (dweight, or dz of an fp32
z) are held to 1e-4: they are accumulated in fp32 from exact inputs.
"""

from __future__ import annotations

import os

import pytest
import torch

from kernels.norm.reference import gated_rms_norm_ref, rms_norm_ref

from ._tol import BF16_TOL, RECORD, rel_err

DEV = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
FP32_TOL = 1e-5
EPS = 1e-5


def _check(name: str, out, ref, dtype, torch_out=None) -> float:
    err = rel_err(out, ref)
    if dtype == torch.float32:
        tol = FP32_TOL
    else:
        tol = BF16_TOL if torch_out is None else max(BF16_TOL, 2 * rel_err(torch_out, ref))
    RECORD.append({"name": name, "dtype": str(dtype).replace("torch.", ""), "err": err, "tol": tol})
    assert err <= tol, f"{name}: relative error {err:.3e} > tolerance {tol:.1e} ({dtype})"
    return err


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """Same values, other strides: `transposed` (last-dim stride > 1) or `sliced` (rows of a wider
    buffer, as z sliced out of the in-projection; the other columns NaN)."""
    if layout == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "sliced":
        wide = torch.full((*t.shape[:-1], t.shape[-1] + 40), float("nan"), device=t.device, dtype=t.dtype)
        wide[..., 8:8 + t.shape[-1]] = t
        return wide[..., 8:8 + t.shape[-1]]
    return t


def _run(fn, tensors, dout):
    leaves = [t.detach().requires_grad_() for t in tensors]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, dout.to(out.dtype))
    return out.detach(), grads


def _compare(tag, fn_ours, fn_ref, args, dout):
    """ours on args vs the reference in fp64 on the same values, and the reference on args
    themselves (plain torch in the same dtypes, for the 2x rule)."""
    o, g = _run(fn_ours, args, dout)
    o_r, g_r = _run(fn_ref, [a.double() for a in args], dout.to(o.dtype).double())
    o_l, g_l = _run(fn_ref, args, dout)
    assert o.dtype == args[0].dtype, f"{tag}: output dtype {o.dtype} != input dtype {args[0].dtype}"
    _check(f"{tag} out", o, o_r, o.dtype, o_l)
    for k, a, b, lo, t in zip(("dx", "dz", "dw") if len(args) == 3 else ("dx", "dw"), g, g_r, g_l, args):
        assert a.dtype == t.dtype, f"{tag} {k}: dtype {a.dtype} != input dtype {t.dtype}"
        if a.dtype == torch.float32 and o.dtype != torch.float32:  # fp32 accumulation of exact half inputs
            err = rel_err(a, b)
            RECORD.append({"name": f"{tag} {k}", "dtype": "float32", "err": err, "tol": 1e-4})
            assert err <= 1e-4, f"{tag} {k}: relative error {err:.3e} > 1e-4"
        else:
            _check(f"{tag} {k}", a, b, a.dtype, lo)


def _inputs(shape, dtype, wdtype=torch.float32, zdtype=None, seed=0):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    x = torch.randn(*shape, device=DEV, generator=gen).to(dtype)
    z = (2 * torch.randn(*shape, device=DEV, generator=gen)).to(zdtype or dtype)
    w = (1 + 0.3 * torch.randn(shape[-1], device=DEV, generator=gen)).to(wdtype)
    dout = torch.randn(*shape, device=DEV, generator=gen)
    return x, z, w, dout


BIG = DEV == "cuda"  # the interpreter (debugging on the CPU) skips the training-size shapes
RMS_SHAPES = [(16384, 1024), (4, 2048, 1024), (2, 63, 1000), (37, 96), (5, 3, 64), (3, 4099)]
DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.float32), (torch.bfloat16, torch.bfloat16),
          (torch.float16, torch.float32)]
DTYPE_IDS = ["fp32", "bf16_fp32w", "bf16", "fp16_fp32w"]


@pytest.mark.parametrize("dtype,wdtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", RMS_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_rms_norm_matches_reference(shape, dtype, wdtype):
    from kernels.norm.op import rms_norm

    if not BIG and shape[0] * shape[-1] > 200_000:
        pytest.skip("training-size shape: GPU only")
    x, _, w, dout = _inputs(shape, dtype, wdtype)
    _compare(f"rms {shape} {dtype}", lambda x, w: rms_norm(x, w, EPS), lambda x, w: rms_norm_ref(x, w, EPS), (x, w), dout)


GATED_SHAPES = [  # shape, group_size
    ((16384, 2048), 2048), ((16384, 2048), 1024), ((16384, 1024), 1024),
    ((37, 2048), 2048), ((37, 2048), 1024), ((2, 63, 1000), 500), ((2, 63, 96), 96), ((7, 384), 128),
]


@pytest.mark.parametrize("dtype,wdtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", GATED_SHAPES, ids=lambda c: "x".join(map(str, c[0])) + f"_g{c[1]}")
def test_gated_rms_norm_matches_reference(case, dtype, wdtype):
    from kernels.norm.op import gated_rms_norm

    shape, gs = case
    if not BIG and shape[0] * shape[-1] > 200_000:
        pytest.skip("training-size shape: GPU only")
    y, z, w, dout = _inputs(shape, dtype, wdtype)
    _compare(f"gated {shape} g{gs} {dtype}", lambda y, z, w: gated_rms_norm(y, z, w, EPS, gs),
             lambda y, z, w: gated_rms_norm_ref(y, z, w, EPS, gs), (y, z, w), dout)


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_non_contiguous_inputs_and_upstream_gradient(layout, dtype):
    from kernels.norm.op import gated_rms_norm, rms_norm

    x, z, w, _ = _inputs((3, 50, 256), dtype)
    x, z = _layout(x, layout), _layout(z, layout)
    dout = torch.randn(256, 50, 3, device=DEV).permute(2, 1, 0)  # a non-contiguous upstream gradient
    _compare(f"rms {layout} {dtype}", lambda x, w: rms_norm(x, w, EPS), lambda x, w: rms_norm_ref(x, w, EPS), (x, w), dout)
    _compare(f"gated {layout} {dtype}", lambda y, z, w: gated_rms_norm(y, z, w, EPS, 128),
             lambda y, z, w: gated_rms_norm_ref(y, z, w, EPS, 128), (x, z, w), dout)


@pytest.mark.parametrize("ydt,zdt", [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)], ids=["y_bf16", "z_bf16"])
def test_gated_mixed_dtypes(ydt, zdt):
    """y and z of different dtypes: fp32 arithmetic, y's dtype out, each gradient in its input's."""
    from kernels.norm.op import gated_rms_norm

    y, z, w, dout = _inputs((2, 63, 1024), ydt, zdtype=zdt)
    _compare(f"gated mixed {ydt}/{zdt}", lambda y, z, w: gated_rms_norm(y, z, w, EPS, 512),
             lambda y, z, w: gated_rms_norm_ref(y, z, w, EPS, 512), (y, z, w), dout)


def test_empty_rows():
    from kernels.norm.op import gated_rms_norm, rms_norm

    x, z, w, dout = _inputs((0, 256), torch.bfloat16)
    o, (dx, dw) = _run(lambda x, w: rms_norm(x, w, EPS), (x, w), dout)
    assert o.shape == (0, 256) and (dw == 0).all()
    o, (dy, dz, dw) = _run(lambda y, z, w: gated_rms_norm(y, z, w, EPS, 128), (x, z, w), dout)
    assert o.shape == (0, 256) and dz.shape == (0, 256) and (dw == 0).all()


def test_dweight_is_deterministic():
    """Partial sums reduced in a fixed order, no atomics: two backwards agree bit for bit."""
    from kernels.norm.op import gated_rms_norm

    y, z, w, dout = _inputs((4099, 2048), torch.bfloat16)
    g1 = _run(lambda y, z, w: gated_rms_norm(y, z, w, EPS, 1024), (y, z, w), dout)[1]
    g2 = _run(lambda y, z, w: gated_rms_norm(y, z, w, EPS, 1024), (y, z, w), dout)[1]
    assert all(torch.equal(a, b) for a, b in zip(g1, g2)), "the backward must be deterministic"


def test_public_entry_dispatch():
    """CUDA fp32/bf16/fp16 -> Triton (its autograd node); fp64 -> the reference (exact)."""
    if DEV != "cuda":
        pytest.skip("dispatch is by device: CUDA only")
    from kernels.norm import gated_rms_norm, rms_norm

    x, z, w, _ = _inputs((8, 512), torch.bfloat16)
    x.requires_grad_()
    assert "RMSNormFn" in type(rms_norm(x, w).grad_fn).__name__
    assert "RMSNormFn" in type(gated_rms_norm(x, z, w, group_size=256).grad_fn).__name__
    xd, zd, wd = x.detach().double(), z.double(), w.double()
    assert torch.equal(rms_norm(xd, wd), rms_norm_ref(xd, wd))
    assert torch.equal(gated_rms_norm(xd, zd, wd, group_size=256), gated_rms_norm_ref(xd, zd, wd, group_size=256))


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16_autocast"])
def test_modules_use_kernel_matches_torch_path(autocast):
    """RMSNorm / GatedRMSNorm with use_kernel True vs False, same weights: outputs (same dtype)
    and parameter and input gradients. Under bf16 autocast the inputs are bf16 (as the mixers
    produce them) and the weights fp32."""
    from hades.models.layers import GatedRMSNorm, RMSNorm

    dtype = torch.bfloat16 if autocast else torch.float32
    tol = BF16_TOL if autocast else FP32_TOL
    x, z, _, dout = _inputs((2, 257, 2048), dtype, seed=4)
    mods = {"rms": RMSNorm(2048), "gated": GatedRMSNorm(2048, group_size=1024)}
    for name, mod in mods.items():
        mod = mod.to(DEV)
        with torch.no_grad():
            mod.weight.mul_(1 + 0.3 * torch.randn(2048, device=DEV))
        res = {}
        for use_kernel in (False, True):
            mod.use_kernel = use_kernel
            mod.weight.grad = None
            leaves = [t.detach().requires_grad_() for t in ((x,) if name == "rms" else (x, z))]
            with torch.autocast(DEV, dtype=torch.bfloat16, enabled=autocast):
                out = mod(*leaves)
            out.backward(dout.to(out.dtype))
            res[use_kernel] = (out.detach(), mod.weight.grad.clone(), [t.grad for t in leaves])
        (o0, w0, g0), (o1, w1, g1) = res[False], res[True]
        assert o1.dtype == o0.dtype == dtype, f"{name}: dtype {o1.dtype} (kernel) vs {o0.dtype} (torch), input {dtype}"
        for k, a, b in (("out", o1, o0), ("dweight", w1, w0), *((f"d{i}", a, b) for i, (a, b) in enumerate(zip(g1, g0)))):
            err = rel_err(a, b)
            RECORD.append({"name": f"module {name} {k} use_kernel", "dtype": str(dtype), "err": err, "tol": tol})
            assert a.dtype == b.dtype and err <= tol, f"{name} {k}: kernel vs torch rel err {err:.2e} > {tol:.0e} ({a.dtype}, {b.dtype})"


@pytest.mark.parametrize("ydt", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_residual_add_forward_is_torch_add(ydt):
    """residual_add's Triton forward (fp32 residual stream + the mixer's output) == x + y bit for
    bit at the training shape and at a length that is not a multiple of its block; a
    non-contiguous y takes torch's add."""
    from kernels.norm import op

    for shape in ((8, 2048, 1024), (3, 37, 1000)):
        x = torch.randn(*shape, device=DEV)
        y = torch.randn(*shape, device=DEV).to(ydt)
        res = op.ResidualGrad()
        out = op.residual_add(x, y, res)
        assert out.dtype == torch.float32 and torch.equal(out, x + y), f"{shape}: Triton add != x + y"
        yt = y.transpose(0, 1).contiguous().transpose(0, 1)
        assert torch.equal(op.residual_add(x, yt, res), x + yt)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_gated_norm_adds_the_held_gradient(dtype):
    """HADES's slots = gated_rms_norm(y, z) feeding out_proj and the diversity loss: the loss's
    gradient left in a GradHolder and added inside the norm's backward kernel (in fp32) against
    autograd's sum (of two bf16 gradients, for bf16 slots) and fp64: every gradient at the
    training shape; fp32 == autograd to 1e-5, bf16 no further from fp64 than autograd's (the
    kernel skips the bf16 rounding of the sum); the holder emptied."""
    from kernels.diversity import op as div_op
    from kernels.diversity.reference import diversity_loss_ref
    from kernels.norm import op

    gen = torch.Generator(device=DEV).manual_seed(9)
    y0, z0 = (torch.randn(8, 2048, 1024, device=DEV, generator=gen).to(dtype) for _ in range(2))
    w0 = 1 + 0.3 * torch.randn(1024, device=DEV, generator=gen)
    proj = torch.randn(1024, 1024, device=DEV, generator=gen).to(dtype) * 1024**-0.5
    grads = {}
    for mode in ("autograd", "holder", "fp64"):
        leaves = [t.clone().double().requires_grad_(True) if mode == "fp64" else t.clone().requires_grad_(True)
                  for t in (y0, z0, w0)]
        hold = op.GradHolder() if mode == "holder" else None
        if mode == "fp64":
            slots = gated_rms_norm_ref(*leaves, EPS, 1024)
            div = diversity_loss_ref(slots.view(8, 2048, 16, 64))
        else:
            slots = op.gated_rms_norm(*leaves, EPS, 1024, dout_extra=hold)
            div = div_op.diversity_loss(slots.view(8, 2048, 16, 64), grad_to=hold)
        loss = (slots @ proj.to(slots.dtype)).double().square().mean() + 0.1 * div
        grads[mode] = torch.autograd.grad(loss, leaves)
        assert hold is None or hold.g is None, "the holder kept a gradient"
    for k, a, b, r in zip(("dy", "dz", "dw"), grads["holder"], grads["autograd"], grads["fp64"]):
        if dtype == torch.float32:
            err, tol = rel_err(a, b), FP32_TOL
        else:
            err, tol = rel_err(a, r), max(BF16_TOL, 1.05 * rel_err(b, r))
        RECORD.append({"name": f"gated norm held gradient {k}", "dtype": str(dtype), "err": err, "tol": tol})
        assert err <= tol, f"{k}: holder rel err {err:.2e} > {tol:.1e}"


@pytest.mark.parametrize("tap", [False, True], ids=["stream", "tapped_stream"])
def test_residual_chain_takes_the_norms_bf16_dx(tap, monkeypatch):
    """Four pre-norm blocks x <- x + f(rms_norm(x)) (bf16 f, fp32 stream) at the training shape,
    with residual_add and its holder: the norm's dx also written in bf16 for the previous add's
    backward (CONFIG["LOW_GRAD"]; 3 of the 4 adds take it) gives the gradients of the add's own
    cast (the kernel rounds the same fp32 dx to nearest; to 1e-4: an FMA contraction may differ
    between the two compiled variants, flipping a bf16 rounding), and both are x + y's up to the
    fused kernels' rounding (the holder's add inside the norm kernel may be contracted, which
    moves bf16 roundings downstream: 6e-5 seen). With the stream also read elsewhere none takes
    it: taking it would drop that reader's gradient from the mixer's (an O(1) error)."""
    from kernels.norm import op

    gen = torch.Generator(device=DEV).manual_seed(10)
    x0 = torch.randn(8, 2048, 1024, device=DEV, generator=gen)
    ws = [1 + 0.3 * torch.randn(1024, device=DEV, generator=gen) for _ in range(4)]
    ms = [torch.randn(1024, 1024, device=DEV, generator=gen).to(torch.bfloat16) * 1024**-0.5 for _ in range(4)]
    dout = torch.randn(8, 2048, 1024, device=DEV, generator=gen)

    def blocks(fused):
        x = x0.clone().requires_grad_(True)
        wl = [w.clone().requires_grad_(True) for w in ws]
        h, extra = x, 0.0
        for w, m in zip(wl, ms):
            if tap and h is not x:
                extra = extra + (h * dout).sum()
            res = op.ResidualGrad() if fused else None
            y = torch.tanh(op.rms_norm(h, w, EPS, residual=res).to(torch.bfloat16) @ m)
            h = op.residual_add(h, y, res) if fused else h + y
        return torch.autograd.grad((h * dout).sum() + extra, [x, *wl])

    ref = blocks(False)
    monkeypatch.setitem(op.CONFIG, "LOW_GRAD", False)
    cast = blocks(True)
    monkeypatch.setitem(op.CONFIG, "LOW_GRAD", True)
    op.LOW_GRAD_USED[0] = 0
    got = blocks(True)
    assert op.LOW_GRAD_USED[0] == (0 if tap else 3), f"{op.LOW_GRAD_USED[0]} adds took the norm's bf16 dx"
    for k, a, b, r in zip(("dx", "dw0", "dw1", "dw2", "dw3"), got, cast, ref):
        assert rel_err(a, b) <= 1e-4, f"{k}: the norm's bf16 dx vs the add's cast, rel {rel_err(a, b):.2e}"
        assert rel_err(a, r) <= 1e-3 and rel_err(b, r) <= 1e-3, (
            f"{k}: fused vs x + y, rel {rel_err(a, r):.2e} / {rel_err(b, r):.2e}")

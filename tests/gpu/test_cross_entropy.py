"""Fused cross-entropy (kernels/cross_entropy) on the GPU: the Triton op vs the fp64 reference on
the same (rounded) logits, loss, per-row loss and lse, and the logits gradient under an upstream
gradient other than 1; fp32 and bf16 logits, ignored rows, NaN-poisoned outputs, strided logits,
every row ignored, no rows, more than 2^31 logits; padded logits with n_classes (the pad columns
hold NaN and get an exact-zero gradient, the same numbers as the op on the slice); a second
backward through the same graph (the same gradient again); the LM's loss through the op on the
padded logits == the loss through F.cross_entropy(logits.float()) on the sliced logits (what it
was), forward and every parameter gradient, with the slice out of the loss's graph; and the
trainer's `next_token_ce` likewise.

Tolerances (relative, L2): fp32 loss and grad <= 1e-5 (no matrix products: only exp/log
rounding); bf16 logits: loss <= 1e-3 (fp32 accumulation of exact bf16 inputs), grad <= 1e-2
(the gradient is stored in bf16: one rounding, two when the upstream gradient is not a power
of 2).
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
import torch.nn.functional as F

from kernels.cross_entropy.reference import cross_entropy_ref, cross_entropy_rows_ref

from ._tol import RECORD, rel_err

DEV = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1e-3, 1e-2)}  # (loss, grad)
UPSTREAM = 0.37


def _check(name: str, out, ref, tol: float, dtype) -> float:
    err = rel_err(out, ref)
    RECORD.append({"name": name, "dtype": str(dtype).replace("torch.", ""), "err": err, "tol": tol})
    assert err <= tol, f"{name}: relative error {err:.3e} > tolerance {tol:.1e} ({dtype})"
    return err


def _inputs(n, v, dtype, seed=0, ignored=0.1, scale=3.0, offset=0.0):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    x = (scale * torch.randn(n, v, device=DEV, generator=gen) + offset).to(dtype)
    y = torch.randint(0, v, (n,), device=DEV, generator=gen)
    y[torch.rand(n, device=DEV, generator=gen) < ignored] = -100
    y[0] = v - 1  # the last column: in the tail block
    return x, y


def _loss_grad(fn, x, y, upstream=UPSTREAM, **kw):
    x = x.detach().requires_grad_()
    loss = fn(x, y, **kw)
    (loss * upstream).backward()
    return loss.detach(), x.grad


def _compare(tag, x, y, n_classes=None):
    """Our op vs the fp64 reference on the same logits: loss, rows, lse, grad (0 in the pad
    columns when n_classes < x.shape[1])."""
    from kernels.cross_entropy.op import cross_entropy, cross_entropy_rows

    dtype = x.dtype
    tl, tg = TOL[dtype]
    kw = {} if n_classes is None else {"n_classes": n_classes}
    loss, grad = _loss_grad(cross_entropy, x, y, **kw)
    loss_r, grad_r = _loss_grad(cross_entropy_ref, x.double(), y, **kw)
    assert loss.dtype == torch.float32 and grad.dtype == dtype and grad.shape == x.shape
    if n_classes is not None:
        assert (grad[:, n_classes:] == 0).all(), f"{tag}: the pad columns must get an exact-zero gradient"
    _check(f"ce {tag} loss", loss, loss_r, tl, dtype)
    _check(f"ce {tag} grad", grad, grad_r, tg, dtype)
    rows, lse, _ = cross_entropy_rows(x, y, **kw)
    rows_r, lse_r = cross_entropy_rows_ref(x.double(), y, **kw)
    _check(f"ce {tag} loss_rows", rows, rows_r, tl, dtype)
    _check(f"ce {tag} lse", lse, lse_r, tl, dtype)
    assert (grad[y == -100] == 0).all(), f"{tag}: ignored rows must get an all-zero gradient"
    with torch.no_grad():  # the path that saves nothing
        assert torch.equal(cross_entropy(x, y, **kw), loss), f"{tag}: no-grad loss differs from the training loss"
    return loss, grad


@pytest.mark.parametrize("n", [1, 37, 4096])
@pytest.mark.parametrize("v", [1000, 32000, 50277])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cross_entropy_matches_reference(n, v, dtype):
    x, y = _inputs(n, v, dtype, seed=n + v)
    _compare(f"{n}x{v}", x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["row_stride", "col_stride", "lm_view", "shifted"])
def test_cross_entropy_layouts(layout, dtype):
    """Strided logits: a slice of a padded vocabulary (row stride 50288, the full blocks load
    vectorised), a column stride (copied), the LM's (B, T, padded V)[..., :V].flatten(0, 1) view;
    and logits far from 0 (the online max keeps exp in range)."""
    v = 50277
    x, y = _inputs(300, v, dtype, seed=7, offset=100.0 if layout == "shifted" else 0.0)
    if layout == "row_stride":
        x = torch.cat([x, torch.full((300, 11), float("nan"), device=DEV, dtype=dtype)], 1)[:, :v]
        assert x.stride() == (50288, 1)
    elif layout == "col_stride":
        x = torch.stack([x, torch.full_like(x, float("nan"))], -1).flatten(1)[:, ::2]
    elif layout == "lm_view":
        padded = torch.full((3, 100, 50288), float("nan"), device=DEV, dtype=dtype)
        padded[..., :v] = x.reshape(3, 100, v)
        x = padded[..., :v].flatten(0, 1)
        assert x.data_ptr() == padded.data_ptr(), "the LM's rows must be a view, not a copy"
    _compare(layout, x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", [(300, 50277, 50288), (37, 1000, 1008), (64, 1000, 2048), (5, 768, 1024), (1, 7, 16)],
                         ids=lambda s: f"{s[0]}x{s[1]}in{s[2]}")
def test_cross_entropy_padded_vocab(shape, dtype):
    """n_classes < V_padded: the padded logits (pad columns NaN: never read) against the fp64
    reference on the class columns, exact zeros in the pad columns (the gradient buffer starts
    as NaN), and bit for bit the loss and class-column gradient of the op on the slice
    [:, :n_classes] (the same kernel on the same memory). Shapes: the LM's 50,277 in 50,288 (the
    classes end in the tail block), the boundary inside a full block / on a block edge of 256
    columns (BLOCK_V 256), one row of a tiny vocabulary."""
    from kernels.cross_entropy import op

    n, v, v_pad = shape
    x, y = _inputs(n, v, dtype, seed=n + v_pad)
    padded = torch.cat([x, torch.full((n, v_pad - v), float("nan"), device=DEV, dtype=dtype)], 1)
    saved = dict(op.CONFIG)
    try:
        if v < 4096:
            op.CONFIG["BLOCK_V"] = 256
        loss, grad = _compare(f"padded {n}x{v}in{v_pad}", padded, y, n_classes=v)
        loss_s, grad_s = _loss_grad(op.cross_entropy, padded[:, :v], y)
    finally:
        op.CONFIG.update(saved)
    assert torch.equal(loss, loss_s) and torch.equal(grad[:, :v], grad_s), "padded with n_classes != the op on the slice"


def test_cross_entropy_edge_cases():
    """Every row ignored: NaN loss as F.cross_entropy, and a zero gradient; no rows: NaN;
    int32 labels; a label out of range (or in a pad column): NaN (no out-of-bounds read); a
    second backward through the same graph gives the same gradient again (nothing saved is
    modified); upstream gradients of any value, sign and 0 reach the kernel on the device."""
    from kernels.cross_entropy.op import cross_entropy, cross_entropy_rows

    x, y = _inputs(64, 1000, torch.bfloat16, seed=3)
    y_all = torch.full_like(y, -100)
    loss, grad = _loss_grad(cross_entropy, x, y_all)
    loss_t, _ = _loss_grad(lambda x, y: F.cross_entropy(x.float(), y, ignore_index=-100), x, y_all)
    assert torch.isnan(loss) and torch.isnan(loss_t), f"every row ignored: {loss} vs F.cross_entropy {loss_t}"
    assert (grad == 0).all(), "every row ignored: a zero gradient (each row's is)"

    empty = torch.empty(0, 1000, device=DEV, dtype=torch.bfloat16)
    e_loss, e_grad = _loss_grad(cross_entropy, empty, torch.empty(0, dtype=torch.long, device=DEV))
    assert torch.isnan(e_loss) and e_grad.shape == (0, 1000)

    loss32, grad32 = _loss_grad(cross_entropy, x, y.int())
    loss64, grad64 = _loss_grad(cross_entropy, x, y)
    assert torch.equal(loss32, loss64) and torch.equal(grad32, grad64), "int32 labels == int64 labels"

    y_bad = y.clone()
    y_bad[5] = 1000
    rows, _, _ = cross_entropy_rows(x, y_bad)
    assert torch.isnan(rows[5]) and not torch.isnan(rows[torch.arange(64, device=DEV) != 5]).any()
    padded = torch.cat([x, torch.zeros(64, 8, device=DEV, dtype=x.dtype)], 1)
    y_bad[5] = 1003  # a pad column
    rows, _, _ = cross_entropy_rows(padded, y_bad, n_classes=1000)
    assert torch.isnan(rows[5]) and not torch.isnan(rows[torch.arange(64, device=DEV) != 5]).any()

    xs = padded.detach().requires_grad_()
    loss = cross_entropy(xs, y, n_classes=1000)
    loss.backward(torch.tensor(UPSTREAM, device=DEV), retain_graph=True)
    g1 = xs.grad.clone()
    loss.backward(torch.tensor(UPSTREAM, device=DEV), retain_graph=True)
    assert torch.equal(xs.grad, 2 * g1), "a second backward through the same graph: the same gradient again"
    for up in (1.0, -2.5, 0.0, 1e-3):
        xs.grad = None
        loss.backward(torch.tensor(up, device=DEV), retain_graph=True)
        _check(f"ce upstream {up}", xs.grad, g1 * (up / UPSTREAM), 1e-2, x.dtype)  # 0 == 0 passes


@pytest.mark.parametrize("v_pad", [50_277, 50_288], ids=["unpadded", "padded"])
def test_cross_entropy_more_than_2_31_logits(v_pad):
    """45,000 x 50,277 bf16 (2.26e9 elements; with the LM's padding 50,288 columns, of which
    50,277 classes): row offsets of the logits and of the gradient need int64. The forward and
    backward kernels directly (no autograd), the last rows against the reference (an fp64
    reference of the whole would take 18 GB)."""
    if DEV != "cuda":
        pytest.skip("too large for the interpreter")
    from kernels.cross_entropy.op import cross_entropy_grad, cross_entropy_rows

    n, v = 45_000, 50_277
    x = torch.randn(n, v_pad, device=DEV, dtype=torch.bfloat16)
    y = torch.randint(0, v, (n,), device=DEV)
    rows, lse, n_valid = cross_entropy_rows(x, y, n_classes=v)
    grad = cross_entropy_grad(x, y, lse, n_valid, torch.tensor(UPSTREAM, device=DEV), n_classes=v)
    assert grad.shape == (n, v_pad)
    tail = slice(n - 64, n)
    rows_r, lse_r = cross_entropy_rows_ref(x[tail].double(), y[tail], n_classes=v)
    _check("ce 2^31 tail loss_rows", rows[tail], rows_r, 1e-3, torch.bfloat16)
    grad_r = torch.softmax(x[tail, :v].double(), -1)
    grad_r[torch.arange(64, device=DEV), y[tail]] -= 1
    _check("ce 2^31 tail grad", grad[tail, :v], grad_r * (UPSTREAM / n), 1e-2, torch.bfloat16)
    assert (grad[tail, v:] == 0).all()
    assert n_valid.item() == n


@pytest.mark.parametrize("precision", ["fp32", "bf16_autocast"])
def test_lm_loss_matches_torch_cross_entropy(precision):
    """A tiny LM (vocab 1000, padded to 1008: the logits are a strided view): the loss of
    model(ids, labels=ids) through the fused op on the padded logits == F.cross_entropy on the
    shifted, sliced logits in fp32 (the former code) + the aux losses, and so are the gradients
    of every parameter; the returned logits are the slice of `logits_padded`, and that slice is
    not in the loss's graph."""
    if DEV != "cuda":
        pytest.skip("needs CUDA")
    from hades.config import ModelConfig
    from hades.models import build_model

    cfg = dataclasses.replace(ModelConfig(), vocab_size=1000, n_layer=2, d_model=128, kernel="auto")
    torch.manual_seed(0)
    model = build_model(cfg).cuda()
    ids = torch.randint(0, 1000, (2, 301), device=DEV)
    labels = ids.clone()
    labels[0, 50:60] = -100
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16_autocast"):
        out = model(ids, labels=labels)
    assert out.logits.stride(-2) == 1008, "the test means the padded (strided) logits"
    assert out.logits_padded.shape == (2, 301, 1008) and out.logits.data_ptr() == out.logits_padded.data_ptr()
    assert torch.equal(out.logits, out.logits_padded[..., :1000])
    assert not _reaches(out.loss, out.logits.grad_fn), "the slice [..., :vocab] must not be in the loss's graph"
    assert _reaches(out.loss, out.logits_padded.grad_fn)
    ref = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
    ref = ref + sum(out.aux_losses.values())
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    tl, tg = (1e-5, 1e-4) if precision == "fp32" else (1e-3, 1e-2)
    _check(f"lm {precision} loss", out.loss, ref, tl, dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    g_ours = torch.autograd.grad(out.loss, params, retain_graph=True, allow_unused=True)
    g_ref = torch.autograd.grad(ref, params, allow_unused=True)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for name, go, gr in zip(names, g_ours, g_ref):
        assert (go is None) == (gr is None), f"{name}: gradient present in one loss only"
        if gr is not None and gr.norm() > 0:
            _check(f"lm {precision} d{name}", go, gr, tg, dtype)


def _reaches(t: torch.Tensor, node) -> bool:
    """Whether the autograd graph of t contains node."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        f = todo.pop()
        if f is None or f in seen:
            continue
        if f is node:
            return True
        seen.add(f)
        todo += [g for g, _ in f.next_functions]
    return False


def test_trainer_next_token_ce_uses_padded_logits():
    """The trainer's loss (hades/train/loop.py `next_token_ce`) on CUDA with kernel auto: the
    op on `logits_padded` with n_classes, the slice out of the graph, the same loss and logits
    gradient as F.cross_entropy on the sliced fp32 logits; when `logits` is no longer the view
    of `logits_padded` (a forward hook replaced it), the op on `logits` itself."""
    if DEV != "cuda":
        pytest.skip("needs CUDA")
    from hades.models.lm import LMOutput
    from hades.train.loop import next_token_ce

    gen = torch.Generator(device=DEV).manual_seed(11)
    padded = (3 * torch.randn(2, 300, 1008, device=DEV, generator=gen)).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, 1000, (600,), device=DEV, generator=gen)
    out = LMOutput(logits=padded[..., :1000], logits_padded=padded)
    ce = next_token_ce(out, targets, "auto")
    assert not _reaches(ce, out.logits.grad_fn)
    (g,) = torch.autograd.grad(ce * UPSTREAM, padded)
    ref = F.cross_entropy(out.logits.flatten(0, 1).float(), targets)
    (g_ref,) = torch.autograd.grad(ref * UPSTREAM, padded)
    _check("trainer ce loss", ce, ref, 1e-5, torch.bfloat16)
    _check("trainer ce grad", g, g_ref, 1e-2, torch.bfloat16)
    assert (g[..., 1000:] == 0).all()

    hooked = LMOutput(logits=out.logits * 2, logits_padded=padded)
    ce2 = next_token_ce(hooked, targets, "auto")
    _check("trainer ce, replaced logits", ce2, F.cross_entropy(hooked.logits.flatten(0, 1).float(), targets), 1e-5, torch.bfloat16)

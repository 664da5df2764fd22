"""Fused cross-entropy (kernels/cross_entropy), on the CPU.

- reference == F.cross_entropy(reduction="mean", ignore_index=-100): loss and logits gradient,
  fp32 and fp64, ignored rows, every row ignored (NaN loss, zero gradient), strided logits, and
  bf16 logits against F.cross_entropy(logits.float()) (what the LM computed before);
- n_classes (a padded vocabulary): the reference on (N, V_padded) logits == F.cross_entropy on
  the first n_classes columns, whatever the pad columns hold, and their gradient is 0;
- the public entry point runs the reference on CPU tensors;
- the Triton kernels == the fp64 reference in Triton's CPU interpreter, on small shapes (V not a
  power of 2, a tail block, full blocks only, row-strided and column-strided logits, padded
  logits with n_classes: the class boundary in the tail block, inside a full block, on a block
  edge; NaN pad columns, NaN-poisoned outputs), a second backward through the same graph, the
  backward kernel called directly. Skipped where Triton is not installed (CI). The interpreter has to be chosen before
  Triton's `jit` wraps the kernel, so this part runs in a subprocess with TRITON_INTERPRET=1:
  `python tests/test_cross_entropy.py` (the same checks, printed as JSON).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _interpreter import interpreter_main, needs_triton, run_in_interpreter

from kernels.cross_entropy import cross_entropy, cross_entropy_ref
from kernels.cross_entropy.reference import cross_entropy_rows_ref

TOL = {torch.float64: 1e-12, torch.float32: 2e-6}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)


def _rel(a, b) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _inputs(n, v, mode, seed=0, dtype=torch.float32, ignore_index=-100):
    gen = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(n, v, generator=gen)).to(dtype)
    y = torch.randint(0, v, (n,), generator=gen)
    if mode == "ignored":
        y[torch.rand(n, generator=gen) < 0.3] = ignore_index
    elif mode == "all_ignored":
        y[:] = ignore_index
    return x, y


def _loss_and_grad(fn, x, y, upstream=0.7, **kw):
    x = x.detach().requires_grad_()
    loss = fn(x, y, **kw)
    (loss * upstream).backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("mode", ["plain", "ignored", "all_ignored"])
@pytest.mark.parametrize("shape", [(37, 1000), (5, 50277), (1, 7)], ids=lambda s: "x".join(map(str, s)))
def test_reference_matches_torch(shape, mode, dtype):
    x, y = _inputs(*shape, mode, dtype=dtype)
    loss, grad = _loss_and_grad(cross_entropy_ref, x, y)
    loss_t, grad_t = _loss_and_grad(F.cross_entropy, x, y, ignore_index=-100)
    assert loss.dtype == dtype and grad.dtype == dtype
    if mode == "all_ignored":
        assert torch.isnan(loss) and torch.isnan(loss_t), f"every row ignored: NaN like F.cross_entropy, got {loss} vs {loss_t}"
        assert (grad == 0).all() and (grad_t == 0).all(), "every row ignored: zero gradient like F.cross_entropy"
        return
    assert _rel(loss, loss_t) <= TOL[dtype], f"loss {loss.item()} vs F.cross_entropy {loss_t.item()}"
    assert _rel(grad, grad_t) <= TOL[dtype], f"grad rel err {_rel(grad, grad_t):.2e}"


def test_reference_other_ignore_index_and_strided_logits():
    """A row stride (the LM's logits are a slice of the padded vocabulary) and ignore_index=0."""
    x, y = _inputs(20, 301, "plain", seed=1)
    wide = torch.randn(20, 320, dtype=torch.float64)
    wide[:, :301] = x.double()
    xs = wide[:, :301]
    y[::3] = 0
    loss, grad = _loss_and_grad(cross_entropy_ref, xs, y, ignore_index=0)
    loss_t, grad_t = _loss_and_grad(F.cross_entropy, xs, y, ignore_index=0)
    assert _rel(loss, loss_t) <= 1e-12 and _rel(grad, grad_t) <= 1e-12


@pytest.mark.parametrize("pad_value", [0.0, 50.0, float("inf"), float("nan")], ids=["zero", "large", "inf", "nan"])
@pytest.mark.parametrize("mode", ["plain", "ignored", "all_ignored"])
def test_reference_n_classes_is_the_sliced_logits(mode, pad_value):
    """n_classes: logits (N, V_padded) -> the loss of F.cross_entropy(logits[:, :n_classes]) and
    its gradient in the class columns, 0 in the pad columns, for any pad content; rows and lse
    too; n_classes == V is the default."""
    v, v_pad = 1000, 1008
    x, y = _inputs(37, v, mode, seed=4, dtype=torch.float64)
    padded = torch.cat([x, torch.full((37, v_pad - v), pad_value, dtype=x.dtype)], 1)
    loss, grad = _loss_and_grad(cross_entropy_ref, padded, y, n_classes=v)
    loss_t, grad_t = _loss_and_grad(F.cross_entropy, x, y, ignore_index=-100)
    assert grad.shape == padded.shape and (grad[:, v:] == 0).all(), "pad columns: zero gradient"
    if mode == "all_ignored":
        assert torch.isnan(loss) and (grad == 0).all()
    else:
        assert _rel(loss, loss_t) <= 1e-12 and _rel(grad[:, :v], grad_t) <= 1e-12
    rows, lse = cross_entropy_rows_ref(padded, y, n_classes=v)
    rows_s, lse_s = cross_entropy_rows_ref(x, y)
    assert torch.equal(rows, rows_s) and torch.equal(lse, lse_s)
    assert torch.equal(cross_entropy_ref(x, y, n_classes=v), cross_entropy_ref(x, y)) or mode == "all_ignored"
    with pytest.raises(AssertionError):
        cross_entropy_ref(padded, y, n_classes=v_pad + 1)


def test_public_entry_n_classes_on_cpu():
    """The entry point hands n_classes on to the reference; bf16 padded logits (the LM's) give
    the loss of F.cross_entropy on the sliced fp32 logits."""
    x, y = _inputs(64, 1000, "ignored", seed=5, dtype=torch.bfloat16)
    padded = torch.cat([x, torch.full((64, 24), 1e4, dtype=x.dtype)], 1)
    loss, grad = _loss_and_grad(cross_entropy, padded, y, n_classes=1000)
    loss_t, grad_t = _loss_and_grad(lambda x, y: F.cross_entropy(x.float(), y), x, y)
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16 and grad.shape == (64, 1024)
    assert _rel(loss, loss_t) <= 1e-6 and _rel(grad[:, :1000], grad_t) <= 1e-2 and (grad[:, 1000:] == 0).all()


def test_public_entry_bf16_on_cpu_matches_float_cross_entropy():
    """On the CPU the entry point is the reference; bf16 logits give what the LM computed with
    F.cross_entropy(logits.float()): an fp32 loss, a bf16 gradient."""
    x, y = _inputs(64, 1000, "ignored", seed=2, dtype=torch.bfloat16)
    loss, grad = _loss_and_grad(cross_entropy, x, y)
    loss_t, grad_t = _loss_and_grad(lambda x, y: F.cross_entropy(x.float(), y), x, y)
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16
    assert _rel(loss, loss_t) <= 1e-6, f"loss {loss.item()} vs {loss_t.item()}"
    assert _rel(grad, grad_t) <= 1e-2, f"grad rel err {_rel(grad, grad_t):.2e} (bf16 rounding)"


# -- the Triton kernel in the CPU interpreter -----------------------------------------------

# (name, rows, vocab, dtype, layout, BLOCK_V or None for CONFIG's, pad): pad > 0 appends that
# many NaN columns and passes the (N, vocab + pad) logits with n_classes=vocab
INTERPRETER_CASES = [
    ("tail_only", 37, 1000, "float32", "contiguous", None, 0),
    ("full_and_tail", 3, 50277, "float32", "contiguous", None, 0),
    ("full_and_tail_bf16", 3, 50277, "bfloat16", "contiguous", None, 0),
    ("full_only", 8, 2048, "float32", "contiguous", None, 0),
    ("small_blocks_row_stride", 9, 1000, "float32", "row_stride", 256, 0),
    ("small_blocks_bf16_row_stride", 9, 1000, "bfloat16", "row_stride", 256, 0),
    ("col_stride", 6, 777, "float32", "col_stride", 128, 0),
    ("padded_lm_bf16", 3, 50277, "bfloat16", "contiguous", None, 11),  # the LM's 50,277 in 50,288
    ("padded_tail", 9, 1000, "float32", "contiguous", 256, 8),  # classes end in the tail block
    ("padded_in_full_block", 5, 1000, "float32", "contiguous", 256, 1048),  # ... inside a full block
    ("padded_block_edge_bf16", 5, 768, "bfloat16", "contiguous", 256, 256),  # ... on a block edge
    ("padded_row_stride", 7, 1000, "float32", "row_stride", 256, 8),
    ("padded_col_stride", 6, 777, "float32", "col_stride", 128, 23),
]
TRITON_TOL = {"float32": (1e-5, 1e-5), "bfloat16": (1e-3, 1e-2)}  # (loss, grad), relative


def _interpreter_checks() -> list[dict]:
    """Run in a process with TRITON_INTERPRET=1. Each case: loss, per-row loss and lse, and the
    gradient under an upstream 0.7 against the fp64 reference on the same (rounded) logits;
    padded cases: exact zeros in the pad columns (which hold NaN: the kernels never read them,
    and the outputs start as NaN: the backward writes them)."""
    import kernels._buffers
    from kernels.cross_entropy import op

    kernels._buffers.POISON_OUTPUTS = True  # every output buffer starts as NaN
    out = []
    for name, n, v, dt, layout, block, pad in INTERPRETER_CASES:
        op.CONFIG["BLOCK_V"] = block or 4096
        dtype = getattr(torch, dt)
        x, y = _inputs(n, v, "ignored", seed=len(out), dtype=dtype)
        y[0] = 5  # at least one valid row
        y[-1] = v - 1  # the last class
        kw = {"n_classes": v} if pad else {}
        if pad:
            x = torch.cat([x, torch.full((n, pad), float("nan"), dtype=dtype)], 1)
        w = x.shape[1]
        if layout == "row_stride":
            x = torch.cat([x, torch.full((n, 19), float("nan"), dtype=dtype)], 1)[:, :w]
        elif layout == "col_stride":
            x = torch.stack([x, torch.full_like(x, float("nan"))], -1).flatten(1)[:, ::2]
        loss, grad = _loss_and_grad(op.cross_entropy, x, y, **kw)
        loss_r, grad_r = _loss_and_grad(cross_entropy_ref, x.double(), y, **kw)
        rows, lse, _ = op.cross_entropy_rows(x, y, **kw)
        rows_r, lse_r = cross_entropy_rows_ref(x.double(), y, **kw)
        with torch.no_grad():
            loss_ng = op.cross_entropy(x, y, **kw)
        tl, tg = TRITON_TOL[dt]
        if pad:
            out.append({"name": f"{name} pad columns: zero grad", "err": float(not (grad[:, v:] == 0).all()), "tol": 0.0})
        out += [
            {"name": f"{name} loss", "err": _rel(loss, loss_r), "tol": tl},
            {"name": f"{name} loss_rows", "err": _rel(rows, rows_r), "tol": tl},
            {"name": f"{name} lse", "err": _rel(lse, lse_r), "tol": tl},
            {"name": f"{name} no_grad loss == loss", "err": _rel(loss_ng, loss), "tol": 0.0},
            {"name": f"{name} grad", "err": _rel(grad, grad_r), "tol": tg},
            {"name": f"{name} grad dtype, shape", "err": float(grad.dtype != dtype or loss.dtype != torch.float32
                                                               or grad.shape != x.shape), "tol": 0.0},
            {"name": f"{name} ignored rows: zero grad", "err": grad[y == -100].abs().sum().item(), "tol": 0.0},
        ]
    op.CONFIG["BLOCK_V"] = 4096

    x, y = _inputs(4, 300, "all_ignored", seed=9)
    loss, grad = _loss_and_grad(op.cross_entropy, x, y)
    out.append({"name": "all ignored: NaN loss, zero grad", "err": float(not (torch.isnan(loss) and (grad == 0).all())), "tol": 0.0})
    x, y = _inputs(4, 300, "plain", seed=10)
    y[2] = 300
    rows, _, _ = op.cross_entropy_rows(x, y)
    out.append({"name": "label out of range: NaN row loss", "err": float(not (torch.isnan(rows[2]) and torch.isfinite(rows[[0, 1, 3]]).all())), "tol": 0.0})
    xp = torch.cat([x, torch.zeros(4, 20)], 1)
    y[2] = 310  # a pad column: out of range too
    rows, _, _ = op.cross_entropy_rows(xp, y, n_classes=300)
    out.append({"name": "label in a pad column: NaN row loss", "err": float(not (torch.isnan(rows[2]) and torch.isfinite(rows[[0, 1, 3]]).all())), "tol": 0.0})

    y = y.clamp(max=299)
    xs = xp.detach().requires_grad_()
    loss = op.cross_entropy(xs, y, n_classes=300)
    loss.backward(torch.tensor(0.3), retain_graph=True)
    g1 = xs.grad.clone()
    loss.backward(torch.tensor(0.3))  # nothing saved is modified: the same gradient again
    out.append({"name": "second backward through the graph: same gradient", "err": _rel(xs.grad, 2 * g1), "tol": 0.0})
    rows, lse, n_valid = op.cross_entropy_rows(xp, y, n_classes=300)
    direct = op.cross_entropy_grad(xp, y, lse, n_valid, torch.tensor(0.3), n_classes=300)
    out.append({"name": "cross_entropy_grad == autograd's gradient", "err": float(not torch.equal(direct, g1)), "tol": 0.0})
    return out


@needs_triton
def test_triton_kernel_in_interpreter():
    results = run_in_interpreter(__file__)
    assert len(results) == sum(7 + (c[-1] > 0) for c in INTERPRETER_CASES) + 5


if __name__ == "__main__":
    interpreter_main(_interpreter_checks)

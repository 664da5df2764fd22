"""kernels/slab.py: a split through a GradSlab has torch.split's gradient whatever its pieces'
consumers do — write their gradient into the slab in place (the Triton ops' `*_into`), return a
fresh tensor, use a piece twice (autograd sums), or not use it at all — and the in-place pieces
are not copied again."""

from __future__ import annotations

import pytest
import torch

from kernels.slab import GradSlab, into

pytestmark = pytest.mark.usefixtures("one_thread")


class _Double(torch.autograd.Function):
    """y = 2 x whose backward writes dx into `target` (a slab part) when given one, the way
    kernels.norm / conv / ssd do; records the tensor it returned."""

    returned: list[torch.Tensor] = []

    @staticmethod
    def forward(ctx, x, target):
        ctx.target, ctx.shape = target, x.shape
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        dx = into(ctx.target, tuple(ctx.shape), like=g)
        dx.copy_(2 * g)
        _Double.returned.append(dx)
        return dx, None


def _run(use_slab: bool, x: torch.Tensor, w: list[torch.Tensor]):
    x = x.detach().requires_grad_(True)
    sizes = [3, 5, 2, 4]
    slab = GradSlab(x, sizes) if use_slab else None
    a, b, c, _unused = slab.split(x) if slab else torch.split(x, sizes, dim=-1)
    ya = _Double.apply(a, slab.part(0) if slab else None)  # written in place
    yb = _Double.apply(b.reshape(2, 7, 5), slab.part(1) if slab else None)  # through a view op
    loss = (ya * w[0]).sum() + (yb.reshape(2, 7, 5) * w[1]).sum() + (c * w[2]).sum() + (c.sin() * w[2]).sum()
    (g,) = torch.autograd.grad(loss, x)
    return g, slab


def test_slab_split_has_torch_splits_gradient(monkeypatch):
    import kernels.slab

    same = []  # per piece: whether the split's backward found it written in place (no copy)
    real = kernels.slab._same
    monkeypatch.setattr(kernels.slab, "_same", lambda a, b: same.append(real(a, b)) or same[-1])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 14, generator=gen, dtype=torch.float64)
    w = [torch.randn(2, 7, 3, generator=gen, dtype=torch.float64), torch.randn(2, 7, 5, generator=gen, dtype=torch.float64),
         torch.randn(2, 7, 2, generator=gen, dtype=torch.float64)]
    _Double.returned.clear()
    ref, _ = _run(False, x, w)
    _Double.returned.clear()
    got, slab = _run(True, x, w)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert got[..., 10:].abs().max() == 0  # the unused piece: zero gradient, not stale memory
    # the in-place consumers wrote into the buffer that came back as x's gradient
    assert all(r.untyped_storage().data_ptr() == got.untyped_storage().data_ptr() for r in _Double.returned)
    assert same == [True, True, False]  # pieces 0, 1 in place; 2 summed by autograd (copied); 3 unused
    assert slab.buf is None  # released by the split's backward


def test_into_checks_the_dtype():
    x = torch.zeros(2, 4)
    slab = GradSlab(x, [1, 3])
    with pytest.raises(AssertionError, match="slab part"):
        into(slab.part(0), (2, 1), like=torch.zeros(0, dtype=torch.float64))


def test_sizes_must_cover_the_last_dim():
    with pytest.raises(AssertionError, match="add up"):
        GradSlab(torch.zeros(2, 4), [1, 2])

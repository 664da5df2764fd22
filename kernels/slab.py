"""One gradient buffer for a tensor that the forward splits into column ranges, written in place
by the ops that consume the pieces, so that the split's backward is no concatenation.

The Mamba-style mixers split the in-projection's output into z, xBC, dt and the conv's output
into x, B, C; `torch.split`'s backward concatenates the pieces' gradients, a copy of the whole
tensor (~0.1 ms of each Mamba2 layer's backward at the paper's shape on an H200,
docs/benchmarks.md section 9). With a slab, the ops whose backward makes a piece's gradient
(`kernels.norm`'s dz, `kernels.conv`'s dx, `kernels.ssd`'s dx, dB, dC) take `slab.part(i)`, a
callable returning that piece's view of the slab's buffer, and write their gradient there; the
split's backward then only copies what arrived elsewhere (a gradient that autograd summed from
several uses, or one that no op wrote in place) and returns the buffer.

    slab = GradSlab(zxbcdt, [d_inner, conv_dim, nheads])
    z, xBC, dt = slab.split(zxbcdt)
    ... gated_rms_norm(y, z, w, dz_into=slab.part(0)) ...

The buffer is allocated by the first backward that asks for a part and released by the
split's backward. Correct whatever the consumers do: a part nobody wrote is copied or zeroed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._buffers import empty


class GradSlab:
    """The gradient buffer of `x` (its shape, dtype and device), split along the last dim."""

    def __init__(self, x: Tensor, sizes: list[int]):
        assert sum(sizes) == x.shape[-1], f"split sizes {sizes} must add up to the last dim {x.shape[-1]}"
        self.shape, self.like = tuple(x.shape), x.new_empty(0)  # (dtype and device only: x is not kept)
        self.sizes = list(sizes)
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.buf: Tensor | None = None

    def view(self, i: int) -> Tensor:
        """Piece i of the buffer (allocated on the first call)."""
        if self.buf is None:
            self.buf = empty(*self.shape, like=self.like)
        return self.buf.narrow(-1, self.offsets[i], self.sizes[i])

    def part(self, i: int) -> Callable[[], Tensor]:
        """The callable an op's backward calls for the tensor to write piece i's gradient into."""
        return lambda: self.view(i)

    def parts(self) -> tuple[Callable[[], Tensor], ...]:
        """`part(i)` of every piece, in order."""
        return tuple(self.part(i) for i in range(len(self.sizes)))

    def split(self, x: Tensor) -> tuple[Tensor, ...]:
        """x split like torch.split(x, sizes, -1), the backward assembling the slab."""
        return _SlabSplit.apply(x, self)


def into(target: Callable[[], Tensor] | None, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """The output buffer of an op's input gradient: target() viewed as `shape` when the op was
    given a slab part (checked against shape and dtype), else a fresh one like `like`."""
    if target is None:
        return empty(*shape, like=like)
    out = target()
    assert out.dtype == like.dtype and out.device == like.device, (
        f"slab part {out.dtype} on {out.device} for a gradient of {like.dtype} on {like.device}")
    return out.view(shape)


def _same(a: Tensor, b: Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


class _SlabSplit(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, slab):
        ctx.slab = slab
        ctx.set_materialize_grads(False)  # an unused piece's gradient arrives as None: zeroed, not copied
        return tuple(x.split(slab.sizes, dim=-1))

    @staticmethod
    def backward(ctx, *grads):
        slab = ctx.slab
        for i, g in enumerate(grads):
            piece = slab.view(i)
            if g is None:
                piece.zero_()
            elif not _same(g, piece):  # not written in place by its consumer
                piece.copy_(g)
        buf, slab.buf = slab.buf, None
        if buf is None:  # (no pieces: cannot happen with sizes adding up to a non-empty dim)
            buf = torch.zeros(slab.shape, dtype=slab.like.dtype, device=slab.like.device)
        return buf, None

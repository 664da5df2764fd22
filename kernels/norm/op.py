"""Autograd op and public functions of the fused Triton RMS norms; `kernel.py`.

    rms_norm(x, weight, eps)                        -> out
    gated_rms_norm(y, z, weight, eps, group_size)   -> out

x, y, z (..., dim) in fp32 / bf16 / fp16, any strides (rows with a unit column stride are read
in place, e.g. z sliced out of a projection; others cost a copy); weight (dim,) in any of
those dtypes -> out (..., dim) contiguous in x's (y's) dtype. fp32 arithmetic. Same functions
as `reference.rms_norm_ref` and `reference.gated_rms_norm_ref`; gradients dx, dz in the
dtypes of x, z and dweight in the weight's.
"""

from __future__ import annotations

import os

import torch
import triton
from torch import Tensor

from .._buffers import empty as _empty
from .._buffers import rows as _rows
from ..slab import into as _into
from .kernel import add_kernel, norm_bwd_kernel, norm_fwd_kernel

# FWD_TILE / BWD_TILE: elements (rows x next_power_of_2(group)) of one program's tile; a row is
# never split, so a tile holds at least one row. BWD_PROGRAMS_PER_SM: backward programs per SM
# (each one a partial dweight row). benchmarks/norm.py --sweep times other choices.
CONFIG = {"FWD_TILE": 2048, "FWD_WARPS": 8, "BWD_TILE": 2048, "BWD_WARPS": 8, "BWD_PROGRAMS_PER_SM": 8,  # H100 sweep, docs/benchmarks.md
          "ADD_BLOCK": 4096, "ADD_WARPS": 8,  # residual_add's forward: elements per program, warps
          # an RMSNorm whose input is a residual_add's output also writes its dx in that add's
          # mixer-output dtype, which the add's backward returns instead of casting (`_low_link`)
          "LOW_GRAD": True}
MAX_GROUP = 16384  # longest row (group) that a program holds in registers; the public entry falls back above
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
LOW_GRAD_USED = [0]  # backwards of residual_add that took the next norm's low-precision dx (tests count them)



def _block_m(tile: int, block_d: int, m: int) -> int:
    return max(1, min(tile // block_d, triton.next_power_of_2(max(m, 1))))


def _n_sm(t: Tensor) -> int:
    if t.is_cuda:
        return torch.cuda.get_device_properties(t.device).multi_processor_count
    return 2  # the interpreter: a few programs, so the tests see partial sums being added


class RMSNormFn(torch.autograd.Function):
    """out = h * rstd * weight per group of `group_size` channels, h = x or x * silu(z)."""

    @staticmethod
    def forward(ctx, x, z, weight, eps, group_size, dz_into, residual, dout_extra=None):
        dim = x.shape[-1]
        x2 = _rows(x)
        z2 = _rows(z) if z is not None else None
        w = weight.contiguous()
        m, ng = x2.shape[0], dim // group_size
        out = _empty(m, dim, like=x)
        rstd = _empty(m, ng, like=x, dtype=torch.float32)
        if m > 0:
            block_d = triton.next_power_of_2(group_size)
            bm = _block_m(CONFIG["FWD_TILE"], block_d, m)
            norm_fwd_kernel[(triton.cdiv(m, bm), ng)](
                x2, z2 if z2 is not None else x2, w, out, rstd,
                m, ng, x2.stride(0), z2.stride(0) if z2 is not None else 0, out.stride(0), eps,
                G=group_size, BLOCK_M=bm, BLOCK_D=block_d, HAS_Z=z is not None, num_warps=CONFIG["FWD_WARPS"],
            )
        ctx.save_for_backward(x2, z2, w, rstd)
        ctx.group_size = group_size
        ctx.dz_into, ctx.residual, ctx.dout_extra = dz_into, residual, dout_extra
        ctx.low_link = _low_link(x) if z is None else None
        ctx.shapes = (x.shape, None if z is None else z.shape)
        ctx.w_dtype = weight.dtype
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, dout):
        x2, z2, w, rstd = ctx.saved_tensors
        x_shape, z_shape = ctx.shapes
        gs = ctx.group_size
        m, dim = x2.shape
        ng = dim // gs
        dout2 = _rows(dout)
        dres = ctx.residual.take() if ctx.residual is not None else None  # (residual_add's backward left it)
        dres2 = _rows(dres) if dres is not None else None
        dext = ctx.dout_extra.take() if ctx.dout_extra is not None else None  # (None: that consumer had no backward)
        dext2 = _rows(dext.reshape(x_shape)) if dext is not None else None  # (left in the consumer's view)
        dx = _empty(m, dim, like=x2)
        link, ctx.low_link = ctx.low_link, None
        dlow = _empty(m, dim, like=x2, dtype=link.y_dtype) if link is not None and m > 0 else None
        dz = _into(ctx.dz_into, (m, dim), like=z2) if z2 is not None else None
        if m == 0:
            dw = torch.zeros(dim, device=w.device, dtype=ctx.w_dtype)
        else:
            block_d = triton.next_power_of_2(gs)
            bm = _block_m(CONFIG["BWD_TILE"], block_d, m)
            n_prog = max(1, min(triton.cdiv(m, bm), _n_sm(x2) * CONFIG["BWD_PROGRAMS_PER_SM"] // ng))
            # tiles of bm rows per program: a power of 2 (a compile-time loop bound; few variants)
            tiles = triton.next_power_of_2(triton.cdiv(triton.cdiv(m, bm), n_prog))
            n_prog = triton.cdiv(m, tiles * bm)
            dw_part = _empty(n_prog, dim, like=x2, dtype=torch.float32)
            norm_bwd_kernel[(n_prog, ng)](
                x2, z2 if z2 is not None else x2, w, dout2, rstd, dx, dz if dz is not None else dx, dw_part,
                dres2 if dres2 is not None else dx,
                m, ng, x2.stride(0), z2.stride(0) if z2 is not None else 0, dout2.stride(0),
                dx.stride(0), dz.stride(0) if dz is not None else 0, dres2.stride(0) if dres2 is not None else 0,
                G=gs, BLOCK_M=bm, BLOCK_D=block_d, TILES=tiles, HAS_Z=z2 is not None, HAS_DRES=dres2 is not None,
                **({} if dext2 is None else dict(dext_ptr=dext2, s_dext=dext2.stride(0), HAS_DEXT=True)),
                **({} if dlow is None else dict(dlow_ptr=dlow, s_dlow=dlow.stride(0), HAS_LOW=True)),
                num_warps=CONFIG["BWD_WARPS"],
            )
            dw = dw_part.sum(0).to(ctx.w_dtype)
        dx = dx.reshape(x_shape)
        if dlow is not None:  # for the residual_add that made x (checked there: _ResidualAdd.backward)
            link.low = (dlow.reshape(x_shape), dx.data_ptr(), dx._version, dx.shape, dx.stride())
        return dx, None if dz is None else dz.reshape(z_shape), dw, None, None, None, None, None


def _low_link(x: Tensor):
    """The backward node (ctx) of the `residual_add` whose output x is, when x's gradient should
    also be written in that add's low-precision mixer dtype (CONFIG["LOW_GRAD"]), else None."""
    fn = x.grad_fn
    if not CONFIG["LOW_GRAD"] or type(fn) is not _ResidualAdd._backward_cls:
        return None
    return fn if fn.y_dtype != x.dtype and fn.y_dtype in (torch.bfloat16, torch.float16) else None


class GradHolder:
    """A gradient that an op's backward leaves for an op upstream of it to add (`take`): the
    norm's output gradient from a second consumer (`gated_rms_norm(dout_extra=)`, HADES's
    diversity loss), so that autograd adds no two gradients of the output's size."""

    def __init__(self):
        self.g: Tensor | None = None

    def put(self, g: Tensor) -> None:
        assert self.g is None, "a GradHolder takes one gradient per backward"
        self.g = g

    def take(self) -> Tensor | None:
        """The gradient left there, or None (that consumer was not differentiated)."""
        g, self.g = self.g, None
        return g


class ResidualGrad(GradHolder):
    """What `residual_add`'s backward hands to the `rms_norm` of the same x (one use): a holder
    that must have been filled, since that add is always differentiated before the norm."""

    def take(self) -> Tensor:
        g = super().take()
        assert g is not None, "rms_norm(residual=...) ran its backward before residual_add's (x + y not in the graph?)"
        return g


class _ResidualAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, residual):
        ctx.residual, ctx.y_dtype = residual, y.dtype
        if not (x.is_contiguous() and y.is_contiguous() and x.dtype == torch.promote_types(x.dtype, y.dtype)):
            return x + y
        out = _empty(*x.shape, like=x)
        n = x.numel()
        if n:
            add_kernel[(triton.cdiv(n, CONFIG["ADD_BLOCK"]),)](x, y, out, n, BLOCK=CONFIG["ADD_BLOCK"],
                                                               num_warps=CONFIG["ADD_WARPS"])
        return out

    @staticmethod
    def backward(ctx, g):
        ctx.residual.g = g  # x's share: added by the norm's backward kernel
        low, ctx.low = getattr(ctx, "low", None), None
        # the next norm's backward may have written g in y's dtype too (`_low_link`): usable
        # only if g is that norm's dx unchanged (no other consumer's gradient added to it, in
        # place or not: same storage, same version)
        if low is not None and (g.data_ptr(), g._version, g.shape, g.stride()) == low[1:]:
            LOW_GRAD_USED[0] += 1
            return None, low[0], None
        return None, g.to(ctx.y_dtype), None


def residual_add(x: Tensor, y: Tensor, residual: ResidualGrad) -> Tensor:
    """x + y, for a pre-norm block x + f(rms_norm(x, ..., residual=residual)): the gradient that
    reaches x through the + is not passed to x here but added by that norm's backward kernel
    (x's one other use), saving an fp32 add of the residual stream's size per block. Only for
    that pattern: the norm must be this op (the kernel path) and run its backward after this one."""
    assert x.shape == y.shape, f"x and y must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
    return _ResidualAdd.apply(x, y, residual)


def _check(x: Tensor, weight: Tensor, group_size: int) -> None:
    assert x.is_cuda or _INTERPRET, "the Triton norms need CUDA tensors"
    dim = x.shape[-1]
    assert weight.shape == (dim,), f"weight must be (dim={dim},), got {tuple(weight.shape)}"
    assert group_size > 0 and dim % group_size == 0, f"group_size {group_size} must divide dim {dim}"
    assert group_size <= MAX_GROUP, f"rows of {group_size} > MAX_GROUP={MAX_GROUP} channels: use the reference"


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-5, residual: ResidualGrad | None = None) -> Tensor:
    """x (..., dim), weight (dim,) -> x / sqrt(mean(x^2) + eps) * weight, (..., dim) in x's dtype; Triton.
    residual: the holder of a `residual_add(x, y, residual)` (a pre-norm block's x + mixer(norm(x))):
    the residual stream's gradient, which that add's backward leaves there instead of passing it
    to x, is added into x's gradient inside the backward kernel (no separate fp32 add)."""
    _check(x, weight, x.shape[-1])
    return RMSNormFn.apply(x, None, weight, eps, x.shape[-1], None, residual)


def gated_rms_norm(y: Tensor, z: Tensor, weight: Tensor, eps: float = 1e-5, group_size: int | None = None,
                   dz_into=None, dout_extra: GradHolder | None = None) -> Tensor:
    """y, z (..., dim), weight (dim,) -> RMSNorm(y * silu(z)) per group of group_size channels
    (None = dim), (..., dim) in y's dtype; Triton. dz_into: a `kernels.slab.GradSlab` part
    that z's gradient is written into (z a piece of the slab's split), or None. dout_extra: a
    `GradHolder` whose gradient (of the output's shape, left by a consumer of the output that
    returns none to autograd) the backward kernel adds to the output's gradient."""
    group_size = group_size or y.shape[-1]
    assert z.shape == y.shape, f"y and z must have one shape, got {tuple(y.shape)} and {tuple(z.shape)}"
    _check(y, weight, group_size)
    return RMSNormFn.apply(y, z, weight, eps, group_size, dz_into, None, dout_extra)

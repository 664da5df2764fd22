"""The Triton short conv (+ SiLU) == the fp64 reference, forward and every gradient, in Triton's
CPU interpreter, on small shapes: the streaming forward and backward (`conv_fwd_stream_kernel`,
`conv_bwd_stream_kernel`) with one
segment and several, a length with a partial last tile, shorter than one tile, than K, and not
a multiple of the segment, channels that are not a multiple of the program's, K = 2, 3, 4 and
5, with and without bias and SiLU, a strided (sliced) input, fp32 and bf16, NaN-poisoned
outputs; the first forward and backward (layout "tile") on the same cases.

Skipped where Triton is not installed (CI); run directly with
`TRITON_INTERPRET=1 python tests/test_conv_kernels.py`.
"""

from __future__ import annotations

import torch
from _interpreter import interpreter_main, needs_triton, range_shim, rel_err, run_in_interpreter

# name, (batch, seqlen, channels, K), dtype, bias, SiLU, CONFIG["bwd"] (BLOCK_T, BLOCK_C, SEG, num_warps)
CASES = [
    ("one_segment", (2, 24, 64, 4), "float32", True, True, (8, 64, 32, 1)),
    ("segments_tail_masked_c", (1, 77, 40, 4), "float32", True, True, (4, 32, 16, 1)),
    ("k3_no_bias", (2, 19, 32, 3), "float32", False, True, (2, 32, 8, 1)),
    ("k2_no_act_2warps", (1, 33, 96, 2), "float32", True, False, (4, 64, 8, 2)),
    ("k5_shorter_than_k", (1, 3, 32, 5), "float32", True, True, (4, 32, 8, 1)),
    ("shorter_than_a_tile", (1, 5, 48, 4), "float32", True, True, (8, 32, 64, 1)),
    ("bf16", (2, 45, 80, 4), "bfloat16", True, True, (8, 64, 16, 1)),
    ("bf16_k4_tile_3", (1, 29, 32, 4), "bfloat16", True, True, (3, 32, 9, 1)),
]
TOL = {"float32": 1e-5, "bfloat16": 1e-2}  # relative L2 against fp64 on the same inputs


def _checks() -> list[dict]:
    range_shim()
    import kernels._buffers
    from kernels.conv import op
    from kernels.conv.reference import causal_conv1d_ref

    kernels._buffers.POISON_OUTPUTS = True
    base = {k: dict(v) for k, v in op.CONFIG.items()}
    out = []
    for layout in ("stream", "tile"):
        for i, (name, (b, t, c, k), dt, has_bias, act, (block_t, block_c, seg, warps)) in enumerate(CASES):
            op.CONFIG.update({key: dict(v) for key, v in base.items()})
            op.CONFIG["bwd"] = dict(layout=layout, BLOCK_T=block_t, BLOCK_C=block_c, SEG=seg, num_warps=warps)
            op.CONFIG["bwd_tile"] = dict(BLOCK_T=1 << (block_t - 1).bit_length(), BLOCK_C=block_c, num_warps=warps)
            op.CONFIG["fwd"] = dict(layout=layout, BLOCK_T=block_t, BLOCK_C=block_c, SEG=seg, num_warps=warps)
            op.CONFIG["fwd_tile"] = dict(BLOCK_T=8, BLOCK_C=32, num_warps=1)
            gen = torch.Generator().manual_seed(i)
            dtype = getattr(torch, dt)
            x = torch.randn(b, t, 2 * c, generator=gen).to(dtype)[..., :c].requires_grad_(True)  # a slice, as in the mixers
            w = (0.5 * torch.randn(c, k, generator=gen)).requires_grad_(True)
            bias = torch.randn(c, generator=gen).requires_grad_(True) if has_bias else None
            leaves = [v for v in (x, w, bias) if v is not None]
            y = op.causal_conv1d(x, w, bias, act)
            ref = [v.detach().double().requires_grad_(True) for v in leaves]
            yr = causal_conv1d_ref(ref[0], ref[1], ref[2] if has_bias else None, act)
            gy = torch.randn(yr.shape, generator=gen, dtype=torch.float64)
            grads = torch.autograd.grad((y.double() * gy).sum(), leaves)
            grads_r = torch.autograd.grad((yr * gy).sum(), ref)
            out.append({"name": f"{layout} {name} y", "err": rel_err(y, yr), "tol": TOL[dt]})
            out += [{"name": f"{layout} {name} {g}", "err": rel_err(gk, gr), "tol": TOL[dt]}
                    for g, gk, gr in zip(("dx", "dw", "db"), grads, grads_r)]
    return out


@needs_triton
def test_conv_in_interpreter():
    results = run_in_interpreter(__file__)
    assert len(results) == 2 * sum(3 + has_bias for *_, has_bias, _act, _cfg in CASES)


if __name__ == "__main__":
    interpreter_main(_checks)

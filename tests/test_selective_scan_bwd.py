"""The Triton selective-scan backward "split" (`selective_scan_bwd_split_kernel`) == the fp64
token loop's gradients, in Triton's CPU interpreter, on small shapes: 1, 2, 4, 8 lanes per
channel, 1, 2, 4 channels per lane, one and two warps, lengths with a partial last tile or
shorter than one tile, channels that are not a multiple of the program's, N = 5, 6, 8 (masked
states), bf16 B and C read as uint32 pairs (contiguous, strided) or not, decays recomputed or
kept, the next tile prefetched or not, the sums over lanes as reduce-scatters (through tl.gather
here, PTX shuffles on a GPU) or all-reduces, with and without D, an initial state and a gradient of the
final state, Mamba's time step softplus(delta + bias) computed in the kernels (with and without
a bias, masked tokens and channels, reduce-scatters and all-reduces); every gradient (u, delta,
A, B, C, D, initial state, bias), NaN-poisoned outputs. The
layout "tile" (the first round's backward) runs the same cases. The forward is the split
forward storing its states every BLOCK_T tokens.

Skipped where Triton is not installed (CI, which installs no Triton: the CPU reference paths
run there). Run directly with `TRITON_INTERPRET=1 python tests/test_selective_scan_bwd.py`.
"""

from __future__ import annotations

import torch
from _interpreter import interpreter_main, needs_triton, range_shim, rel_err, run_in_interpreter
from _ss_inputs import NAMES, scan_args, split_case_inputs

# name, (batch, seqlen, channels, dstate), dtype, CONFIG["bwd"] (BLOCK_T, NG, CT, num_warps), options
BWD_CASES = [
    ("ng4_ct4_tail", (1, 37, 64, 16), "float32", (8, 4, 4, 1), {"init": True}),
    ("ng4_ct2_2warps_noD_masked_c", (2, 24, 40, 16), "float32", (4, 4, 2, 2), {"noD": True}),
    ("ng2_ct1_keep_a_no_prefetch", (1, 19, 24, 16), "float32", (4, 2, 1, 1), {"recompute_a": False, "prefetch": False}),
    ("bf16_pairs_dfinal", (1, 21, 32, 16), "bfloat16", (8, 4, 4, 1), {"init": True}),
    ("bf16_no_pairs", (1, 10, 32, 16), "bfloat16", (2, 4, 2, 1), {"pairs": False}),
    ("dstate5", (1, 13, 20, 5), "float32", (4, 4, 2, 1), {"init": True}),
    ("bf16_dstate6_strided", (1, 11, 20, 6), "bfloat16", (2, 2, 2, 1), {"bc": "strided"}),
    ("shorter_than_a_tile", (1, 5, 16, 16), "float32", (8, 4, 2, 1), {"init": True}),
    ("ng8_ct4_keep_a", (1, 17, 48, 16), "float32", (4, 8, 4, 1), {"recompute_a": False}),
    ("ng1_dstate8", (1, 9, 40, 8), "float32", (4, 1, 1, 1), {}),
    ("ng4_ct2_all_reduce", (1, 19, 32, 16), "float32", (4, 4, 2, 1), {"rs": False}),
    ("softplus_bf16_pairs_tail", (1, 21, 32, 16), "bfloat16", (8, 4, 2, 1), {"softplus": "bias", "init": True}),
    ("softplus_2warps_masked_c", (2, 19, 40, 16), "float32", (4, 4, 2, 2), {"softplus": "bias"}),
    ("softplus_no_bias_all_reduce", (1, 13, 32, 16), "float32", (4, 4, 2, 1), {"softplus": "nobias", "rs": False}),
    ("softplus_ng8_ct4_keep_a", (1, 17, 48, 16), "float32", (4, 8, 4, 1), {"softplus": "bias", "recompute_a": False}),
]
TOL = {"float32": 1e-5, "bfloat16": 1e-2}  # relative L2 against the fp64 loop on the same inputs


def _bwd_checks() -> list[dict]:
    range_shim()
    import kernels._buffers
    from kernels.selective_scan import op
    from kernels.selective_scan.reference import selective_scan_loop

    kernels._buffers.POISON_OUTPUTS = True
    base = {k: dict(v) for k, v in op.CONFIG.items()}
    out = []
    for layout in ("split", "tile"):
        for name, (b, t, c, n), dt, (block_t, ng, ct, warps), opt in BWD_CASES:
            if layout == "tile" and ng != 4:  # (the tile kernel has no lanes per channel: one run each)
                continue
            op.CONFIG.clear()
            op.CONFIG.update({k: dict(v) for k, v in base.items()})
            op.CONFIG["fwd"]["layout"] = "split"
            op.CONFIG["fwd_split_train"] = dict(BLOCK_T=4, NG=4, num_warps=1, pairs=True, NBUF=2)
            op.CONFIG["bwd"] = dict(layout=layout, BLOCK_T=block_t, NG=ng, CT=ct, num_warps=warps,
                                    pairs=opt.get("pairs", True), recompute_a=opt.get("recompute_a", True),
                                    prefetch=opt.get("prefetch", True), rs=opt.get("rs", True), BLOCK_C=16,
                                    tile_warps=2)
            dtype = getattr(torch, dt)
            inputs, gen = split_case_inputs(b, t, c, n, dtype, opt, seed=len(out))
            leaves = [v.requires_grad_(True) for v in inputs if v is not None]
            args, kw = scan_args(inputs, opt)
            y, fin = op.selective_scan(*args, **kw)
            ref = [v.detach().double().requires_grad_(True) if v is not None else None for v in inputs]
            args_r, kw_r = scan_args(ref, opt, reference=True)
            yr, fr = selective_scan_loop(*args_r, **kw_r)
            gy = torch.randn(yr.shape, generator=gen, dtype=torch.float64)
            gf = torch.randn(fr.shape, generator=gen, dtype=torch.float64) if opt.get("init") else None
            loss = (y.double() * gy).sum() + ((fin.double() * gf).sum() if gf is not None else 0)
            loss_r = (yr * gy).sum() + ((fr * gf).sum() if gf is not None else 0)
            grads = torch.autograd.grad(loss, leaves)
            grads_r = torch.autograd.grad(loss_r, [v for v in ref if v is not None])
            names = [k for k, v in zip(NAMES, inputs) if v is not None]
            out += [{"name": f"{layout} {name} d{k}", "err": rel_err(gk, gr), "tol": TOL[dt]}
                    for k, gk, gr in zip(names, grads, grads_r)]
    return out


@needs_triton
def test_split_backward_in_interpreter():
    results = run_in_interpreter(__file__)
    per_case = [5 + ("noD" not in o) + ("init" in o) + (o.get("softplus") == "bias") for *_, o in BWD_CASES]
    tile = [k for (_, _, _, (_, ng, _, _), _), k in zip(BWD_CASES, per_case) if ng == 4]
    assert len(results) == sum(per_case) + sum(tile)


if __name__ == "__main__":
    interpreter_main(_bwd_checks)

"""HADES's in_proj fused with the router's fp32 product (`kernels.router`) vs the plain path, at
the paper's HADES layer shape: u (8 x 2048, D = 1024) fp32 from the block norm, in_proj 1024 ->
2336 in bf16 (autocast), W_r 32 x 1024 in fp32.

    python -m benchmarks.router

Median ms (CUDA events, warm-up excluded) of the forward and of forward + backward (u's two
gradients summed, W_in's and W_r's gradients), launched eagerly and replayed as a CUDA graph (the
trainer's mode; eagerly the host's launches show in the time), ours beside the plain path (nn.Linear under
autocast + an fp32 F.linear, autograd adding u's gradients) and the ratio; the memory floor of
the router's share (u read forward; u read for dW_r, in_proj's bf16 gradient read and u's fp32
gradient written backward; at 3.0 TB/s).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import PEAK_BYTES, bench, bench_graph, environment, save, table, warm_gpu

# (rows, columns per step, warps, stages) of router_bwd_du_rows_kernel that --sweep-du times
DU_ROWS_SWEEP = [(32, 128, 4, 3), (64, 64, 4, 3), (64, 128, 4, 2), (128, 128, 8, 3), (64, 128, 4, 3), (128, 64, 8, 3)]


def sweep_du(m: int = 8 * 2048, k: int = 1024, r: int = 32) -> list[dict]:
    """u's gradient kernel alone (du = dz + dv W_r, fp32 out; kernel_ms, the graph-captured
    step's view) for the tile kernel and the row-streaming one at CONFIG's and DU_ROWS_SWEEP's
    launches, against its memory floor (dz bf16 read, du fp32 written) and each other."""
    from benchmarks.common import copy_rate, kernel_ms
    from kernels.router import op

    g = torch.Generator(device="cuda").manual_seed(0)
    dz = torch.randn(m, k, device="cuda", generator=g).to(torch.bfloat16)
    dv = torch.randn(m, r, device="cuda", generator=g)
    w_r = torch.randn(r, k, device="cuda", generator=g) * k**-0.5
    floor = (2 + 4) * m * k / copy_rate() * 1e3
    saved = dict(op.CONFIG)
    rows, ref = [], None
    for layout, launch in [("tile", op.CONFIG["du"]), ("rows", op.CONFIG["du_rows"]), *(("rows", c) for c in DU_ROWS_SWEEP)]:
        op.CONFIG.update({"du_layout": layout, "du_rows" if layout == "rows" else "du": launch})
        out = op._router_du(dz, dv, w_r)
        ref = out if ref is None else ref
        ms = kernel_ms(lambda: op._router_du(dz, dv, w_r))
        rows.append({"layout": layout, "launch": str(launch), "kern_ms": ms, "floor_ms": floor, "vs_floor": ms / floor,
                     "max_abs_diff_vs_tile": float((out - ref).abs().max())})
        op.CONFIG.clear()
        op.CONFIG.update(saved)
    for row in rows:
        row["tile/this"] = rows[0]["kern_ms"] / row["kern_ms"]
    print(f"\nrouter du kernel, {m} x {k}, R = {r} (kernel ms; CONFIG default {saved['du_layout']} {saved['du_rows']})\n"
          + table(rows, list(rows[0])), flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep-du", action="store_true", help="also time u's gradient kernel at other launches")
    args = ap.parse_args(argv)
    from kernels.router.op import in_router_proj
    from kernels.router.reference import in_router_proj_ref

    warm_gpu()
    m, d, f, r = 8 * 2048, 1024, 2336, 32
    u = torch.randn(8, 2048, d, device="cuda", requires_grad=True)
    w_in = (torch.randn(f, d, device="cuda") * d**-0.5).requires_grad_()
    w_r = (torch.randn(r, d, device="cuda") * d**-0.5).requires_grad_()
    dz = torch.randn(8, 2048, f, device="cuda", dtype=torch.bfloat16)
    dv = torch.randn(8, 2048, r, device="cuda")
    leaves = [u, w_in, w_r]

    def timings(fn):
        def fwd():
            with torch.no_grad():
                fn(u, w_in, w_r, torch.bfloat16)

        def fwdbwd():
            z, v = fn(u, w_in, w_r, torch.bfloat16)
            torch.autograd.grad([z, v], leaves, [dz, dv])

        # eager (the host launches each kernel: a few us of Python per launch) and replayed as a
        # CUDA graph, as the trainer runs it (train.cuda_graph): the kernels' own time
        return {"fwd_ms": bench(fwd), "fwdbwd_ms": bench(fwdbwd), "graph_fwd_ms": bench_graph(fwd),
                "graph_fwdbwd_ms": bench_graph(fwdbwd)}

    rows = [{"impl": "ours", **timings(in_router_proj)}, {"impl": "plain", **timings(in_router_proj_ref)}]
    for k in ("fwd", "fwdbwd", "graph_fwd", "graph_fwdbwd"):
        rows[0][f"plain/ours_{k}"] = rows[1][f"{k}_ms"] / rows[0][f"{k}_ms"]
    z, v = in_router_proj(u, w_in, w_r, torch.bfloat16)
    z2, v2 = in_router_proj_ref(u, w_in, w_r, torch.bfloat16)
    err_v = ((v - v2).norm() / v2.norm()).item()
    floor_router = {"fwd": m * d * 4 / PEAK_BYTES * 1e3, "fwdbwd": m * d * (4 + 4 + 2 + 4) / PEAK_BYTES * 1e3}
    rows[0].update(router_floor_fwd_ms=floor_router["fwd"], router_floor_fwdbwd_ms=floor_router["fwdbwd"], rel_err_v=err_v)
    print("in_proj + router product, u (8 x 2048, 1024) fp32, in_proj 2336 bf16, W_r 32 fp32 (median ms)")
    print(table(rows, ["impl", "fwd_ms", "fwdbwd_ms", "graph_fwd_ms", "graph_fwdbwd_ms", "plain/ours_fwd",
                       "plain/ours_fwdbwd", "plain/ours_graph_fwd", "plain/ours_graph_fwdbwd", "router_floor_fwd_ms",
                       "router_floor_fwdbwd_ms", "rel_err_v"]))
    payload = {"env": environment(), "rows": rows}
    if args.sweep_du:
        payload["du_sweep"] = sweep_du()
    save("router", payload)


if __name__ == "__main__":
    main()

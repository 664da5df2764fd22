"""HADES's diversity loss on the GPU: the Triton op vs the plain-torch definition, at the layer
shape of the paper's HADES (batch 8 x 2048 tokens, H = 16 slots of P = 64, bf16 slot outputs).

    python -m benchmarks.diversity [--sweep]

Median ms (CUDA events, warm-up excluded) of the forward and of forward + backward, the ratio,
and the memory floor (the slot outputs read once forward; read once and the gradient written
once backward, at this GPU's measured copy rate), and the kernels' GPU time alone (`kernel_ms`:
what the graph-captured step sees). `--sweep` times the op's product precision for bf16 inputs
x rows per program x warps (kernel time).
"""

from __future__ import annotations

import argparse
import itertools

import torch

from benchmarks.common import bench, copy_rate, environment, kernel_ms, save, table, warm_gpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args(argv)
    from kernels.diversity import op
    from kernels.diversity.reference import diversity_loss_ref

    warm_gpu()
    y = torch.randn(8, 2048, 16, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    nbytes = y.numel() * y.element_size()
    rate = copy_rate()
    floors = {"fwd": nbytes / rate * 1e3, "bwd": 2 * nbytes / rate * 1e3, "fwdbwd": 3 * nbytes / rate * 1e3}

    def timings(fn):
        return {"fwd_ms": bench(lambda: fn(y)), "fwdbwd_ms": bench(lambda: fn(y).backward(), grad_to_none=[y])}

    def kernel_timings(fn):
        fwd = kernel_ms(lambda: fn(y.detach()))
        return {"fwd_kern_ms": fwd, "bwd_kern_ms": kernel_ms(lambda: fn(y).backward(), grad_to_none=[y]) - fwd}

    rows = [{"impl": "ours", **timings(op.diversity_loss), **kernel_timings(op.diversity_loss)},
            {"impl": "torch", **timings(diversity_loss_ref), **kernel_timings(diversity_loss_ref)}]
    for r in rows:
        r.update({"floor_fwd_ms": floors["fwd"], "floor_bwd_ms": floors["bwd"], "floor_fwdbwd_ms": floors["fwdbwd"]})
        r["bwd_kern_vs_floor"] = r["bwd_kern_ms"] / floors["bwd"]
    rows[0]["speedup_fwd"] = rows[1]["fwd_ms"] / rows[0]["fwd_ms"]
    rows[0]["speedup_fwdbwd"] = rows[1]["fwdbwd_ms"] / rows[0]["fwdbwd_ms"]
    rows[0]["torch/ours_bwd_kern"] = rows[1]["bwd_kern_ms"] / rows[0]["bwd_kern_ms"]
    print(f"diversity loss, (8, 2048, 16, 64) bf16 (median ms; floor = bytes / {copy_rate() / 1e12:.2f} TB/s; CONFIG {op.CONFIG})")
    print(table(rows, ["impl", "fwd_ms", "fwdbwd_ms", "speedup_fwd", "speedup_fwdbwd", "floor_fwd_ms", "floor_fwdbwd_ms"]))
    print("kernel time alone (ms)\n" + table(rows, ["impl", "fwd_kern_ms", "floor_fwd_ms", "bwd_kern_ms", "floor_bwd_ms",
                                                   "bwd_kern_vs_floor", "torch/ours_bwd_kern"]))
    sweep = []
    if args.sweep:
        saved = dict(op.CONFIG)
        ref = diversity_loss_ref(y.detach().float())
        for dot, br, nw in itertools.product(["ieee", "tf32x3", "tf32"], [4, 8, 16], [2, 4]):
            op.CONFIG.update(BLOCK_R=br, num_warps_low=nw, dot_low=dot)  # (y is bf16: the *_low choices)
            row = {"dot_low": dot, "BLOCK_R": br, "num_warps": nw}
            try:
                row["rel_err"] = float((op.diversity_loss(y.detach()) - ref).abs() / ref.abs())
                row.update(kernel_timings(op.diversity_loss))
            except Exception as e:  # noqa: BLE001 - e.g. out of shared memory; reported
                row["error"] = f"{type(e).__name__}: {str(e)[:80]}"
            sweep.append(row)
        op.CONFIG.clear()
        op.CONFIG.update(saved)
        print("sweep, kernel time alone (ms)\n"
              + table(sweep, ["dot_low", "BLOCK_R", "num_warps", "fwd_kern_ms", "bwd_kern_ms", "rel_err", "error"]))
    save("diversity", {"env": environment(), "rows": rows, "sweep": sweep})


if __name__ == "__main__":
    main()

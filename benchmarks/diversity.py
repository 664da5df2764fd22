"""HADES's diversity loss on the GPU: the Triton op vs the plain-torch definition, at the layer
shape of the paper's HADES (batch 8 x 2048 tokens, H = 16 slots of P = 64, bf16 slot outputs).

    python -m benchmarks.diversity [--sweep]

Median ms (CUDA events, warm-up excluded) of the forward and of forward + backward, the ratio,
and the memory floor (the slot outputs read once forward; read once and the gradient written
once backward, at 3.0 TB/s). `--sweep` times the op's product precision x rows per program x warps.
"""

from __future__ import annotations

import argparse
import itertools

import torch

from benchmarks.common import PEAK_BYTES, bench, environment, save, table, warm_gpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args(argv)
    from kernels.diversity import op
    from kernels.diversity.reference import diversity_loss_ref

    warm_gpu()
    y = torch.randn(8, 2048, 16, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    nbytes = y.numel() * y.element_size()
    floors = {"fwd": nbytes / PEAK_BYTES * 1e3, "fwdbwd": 3 * nbytes / PEAK_BYTES * 1e3}

    def timings(fn):
        return {"fwd_ms": bench(lambda: fn(y)), "fwdbwd_ms": bench(lambda: fn(y).backward(), grad_to_none=[y])}

    rows = [{"impl": "ours", **timings(op.diversity_loss)}, {"impl": "torch", **timings(diversity_loss_ref)}]
    for r in rows:
        r.update({"floor_fwd_ms": floors["fwd"], "floor_fwdbwd_ms": floors["fwdbwd"]})
    rows[0]["speedup_fwd"] = rows[1]["fwd_ms"] / rows[0]["fwd_ms"]
    rows[0]["speedup_fwdbwd"] = rows[1]["fwdbwd_ms"] / rows[0]["fwdbwd_ms"]
    print("diversity loss, (8, 2048, 16, 64) bf16 (median ms; floor = bytes / 3.0 TB/s)")
    print(table(rows, ["impl", "fwd_ms", "fwdbwd_ms", "speedup_fwd", "speedup_fwdbwd", "floor_fwd_ms", "floor_fwdbwd_ms"]))
    sweep = []
    if args.sweep:
        saved = dict(op.CONFIG)
        ref = diversity_loss_ref(y.detach().float())
        for dot, br, nw in itertools.product(["ieee", "tf32x3"], [4, 8], [2, 4]):
            op.CONFIG.update(BLOCK_R=br, num_warps=nw, dot=dot)
            row = {"dot": dot, "BLOCK_R": br, "num_warps": nw}
            try:
                row["rel_err"] = float((op.diversity_loss(y.detach()) - ref).abs() / ref.abs())
                row.update(timings(op.diversity_loss))
            except Exception as e:  # noqa: BLE001 - e.g. out of shared memory; reported
                row["error"] = f"{type(e).__name__}: {str(e)[:80]}"
            sweep.append(row)
        op.CONFIG.clear()
        op.CONFIG.update(saved)
        print(table(sweep, ["dot", "BLOCK_R", "num_warps", "fwd_ms", "fwdbwd_ms", "rel_err", "error"]))
    save("diversity", {"env": environment(), "rows": rows, "sweep": sweep})


if __name__ == "__main__":
    main()

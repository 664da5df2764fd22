"""Benchmark of the fused cross-entropy: ours (Triton, `kernels.cross_entropy`) vs
`F.cross_entropy(x.float(), y)` (what the LM and the training loop ran before), with the error
of each against an fp64 reference on this GPU.

    python -m benchmarks.cross_entropy [--rows 16384] [--vocab 50277] [--sweep]

Shape: batch 8 x 2048 tokens (16,384 rows), the GPT-NeoX vocabulary (50,277), bf16 logits, in
two layouts: `contiguous` (N, V) (rows start at odd addresses: scalar loads and stores) and
`lm_view`, the LM's rows as a view of the padded vocabulary (row stride 50,288: the full blocks
load 16 bytes at a time).

Columns: median ms of the forward without a gradient (`fwd`: ours reads the logits once and
writes no gradient), of the training forward (`fwd_grad`: ours also writes the logits gradient)
and of forward + backward (`fwdbwd`: ours then scales that gradient in place); `floor_*` = bytes
ours must move / 3.0e12 B/s (fwd: read N*V; fwd_grad: + write N*V; fwdbwd: + read and write
N*V again); `speedup` = torch / ours; `peak_gib` = peak memory above the inputs during one
forward + backward (x.grad, which both produce, included). --sweep: the training forward of
ours over BLOCK_V x num_warps (CONFIG in kernels/cross_entropy/op.py).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import PEAK_BYTES, bench, environment, save, table, warm_gpu


def _layout(x: torch.Tensor, layout: str, pad_to: int) -> torch.Tensor:
    if layout == "contiguous":
        return x
    padded = torch.zeros(x.shape[0], pad_to, device=x.device, dtype=x.dtype)
    padded[:, : x.shape[1]] = x
    return padded[:, : x.shape[1]]


def _errors(fn, x, y, chunk=2048) -> tuple[float, float]:
    """Relative error of the loss and (L2) of the gradient of fn against fp64, on rows in chunks
    (an fp64 copy of all the logits would take 6.6 GB, its softmax as much again)."""
    xs = x.detach().requires_grad_()
    loss = fn(xs, y)
    loss.backward()
    valid = y != -100
    n_valid = valid.sum().item()
    loss_ref, d2, r2 = 0.0, 0.0, 0.0
    for i in range(0, x.shape[0], chunk):
        xd, yd = x[i : i + chunk].double(), y[i : i + chunk]
        lse = torch.logsumexp(xd, -1)
        vd = valid[i : i + chunk]
        loss_ref += (lse - xd.gather(-1, yd.clamp(min=0)[:, None])[:, 0])[vd].sum().item()
        g = torch.softmax(xd, -1)
        g[torch.arange(len(yd), device=x.device), yd.clamp(min=0)] -= 1
        g = g * vd[:, None] / n_valid
        d2 += (xs.grad[i : i + chunk].double() - g).pow(2).sum().item()
        r2 += g.pow(2).sum().item()
    loss_ref /= n_valid
    return abs(loss.item() - loss_ref) / abs(loss_ref), (d2 / r2) ** 0.5


def _peak_gib(fn, xs, y) -> float:
    xs.grad = None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn(xs, y).backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    xs.grad = None
    return peak / 2**30


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=8 * 2048)
    ap.add_argument("--vocab", type=int, default=50277)
    ap.add_argument("--pad-to", type=int, default=50288, help="row stride of the lm_view layout")
    ap.add_argument("--sweep", action="store_true", help="also time BLOCK_V x num_warps")
    args = ap.parse_args(argv)
    import kernels.cross_entropy.op as op

    n, v = args.rows, args.vocab
    variants = {"ours": op.cross_entropy, "torch": lambda x, y: F.cross_entropy(x.float(), y, ignore_index=-100)}
    gen = torch.Generator(device="cuda").manual_seed(0)
    base = (2.0 * torch.randn(n, v, device="cuda", generator=gen)).to(torch.bfloat16)
    y = torch.randint(0, v, (n,), device="cuda", generator=gen)
    y[2047::2048] = -100  # the last position of each sequence, as the LM's shifted labels
    nbytes = n * v * base.element_size()
    floors = {k: m * nbytes / PEAK_BYTES * 1e3 for k, m in (("fwd", 1), ("fwd_grad", 2), ("fwdbwd", 4))}
    warm_gpu()
    rows = []
    for layout in ("contiguous", "lm_view"):
        x = _layout(base, layout, args.pad_to)
        xs = x.detach().requires_grad_()
        for name, fn in variants.items():
            row = {"layout": layout, "impl": name, **{f"floor_{k}_ms": f for k, f in floors.items()}}
            row["loss_err"], row["grad_err"] = _errors(fn, x, y)

            def fwd(fn=fn, x=x):
                with torch.no_grad():
                    fn(x, y)

            def fwd_grad(fn=fn, xs=xs):
                fn(xs, y)

            def fwdbwd(fn=fn, xs=xs):
                fn(xs, y).backward()

            row["fwd_ms"] = bench(fwd)
            row["fwd_grad_ms"] = bench(fwd_grad)
            row["fwdbwd_ms"] = bench(fwdbwd, grad_to_none=[xs])
            row["peak_gib"] = _peak_gib(fn, xs, y)
            rows.append(row)
            print(row, flush=True)
        ours, theirs = rows[-2], rows[-1]
        for k in ("fwd", "fwd_grad", "fwdbwd"):
            ours[f"speedup_{k}"] = theirs[f"{k}_ms"] / ours[f"{k}_ms"]
            ours[f"{k}_vs_floor"] = ours[f"{k}_ms"] / floors[k]
    cols = ["layout", "impl", "fwd_ms", "fwd_grad_ms", "fwdbwd_ms", "floor_fwd_ms", "floor_fwd_grad_ms", "floor_fwdbwd_ms",
            "speedup_fwd", "speedup_fwdbwd", "fwdbwd_vs_floor", "peak_gib", "loss_err", "grad_err"]
    print(f"\ncross-entropy, {n} x {v} bf16 logits (median ms; floor = bytes / {PEAK_BYTES:.1e} B/s; "
          f"err = rel. error vs fp64)\n" + table(rows, cols))

    sweep = []
    if args.sweep:
        saved = dict(op.CONFIG)
        for layout in ("contiguous", "lm_view"):
            xs = _layout(base, layout, args.pad_to).detach().requires_grad_()
            for block in (1024, 2048, 4096, 8192, 16384):
                for warps in (4, 8, 16):
                    op.CONFIG.update(BLOCK_V=block, num_warps=warps)
                    ms = bench(lambda xs=xs: op.cross_entropy(xs, y))
                    sweep.append({"layout": layout, "BLOCK_V": block, "num_warps": warps, "fwd_grad_ms": ms,
                                  "vs_floor": ms / floors["fwd_grad"]})
        op.CONFIG.clear()
        op.CONFIG.update(saved)
        print("\nsweep of the training forward (ours)\n" + table(sweep, ["layout", "BLOCK_V", "num_warps", "fwd_grad_ms", "vs_floor"]))
    save("cross_entropy", {"env": environment(), "shape": [n, v], "config": op.CONFIG, "rows": rows, "sweep": sweep})


if __name__ == "__main__":
    main()

"""Benchmark of the fused cross-entropy: ours (Triton, `kernels.cross_entropy`) vs
`F.cross_entropy(x.float(), y)` (what the LM and the training loop ran before), with the error
of each against an fp64 reference on this GPU.

    python -m benchmarks.cross_entropy [--rows 16384] [--vocab 50277] [--pad-to 50288] [--sweep]

Shape: batch 8 x 2048 tokens (16,384 rows), the GPT-NeoX vocabulary (50,277), bf16 logits, in
three layouts: `contiguous` (N, V) (rows start at odd addresses: scalar loads and stores);
`lm_view`, the rows as a view [:, :V] of the padded vocabulary (row stride 50,288: the full
blocks load 16 bytes at a time; the gradient is a contiguous (N, V)); `padded`, the padded
(N, 50,288) logits themselves with n_classes = 50,277 (what the LM and the trainer hand the op:
no slice in the graph, the gradient written over the padded width, zeros in the pad columns).
torch in the `padded` layout: F.cross_entropy(x[:, :V].float(), y), the slice's backward
(zero fill + copy of the padded size) included, as the LM ran before.

Columns: median ms of the forward without a gradient (`fwd`: ours reads the logits once), of the
training forward (`fwd_grad`: ours the same read, keeping only the per-row lse) and of forward +
backward (`fwdbwd`: ours' backward reads the logits again and writes the gradient once);
`floor_*` = bytes ours must move / 3.0e12 B/s (fwd and fwd_grad: read N*V; fwdbwd: + read N*V,
write N*V_padded); `speedup` = torch / ours; `peak_gib` = peak memory above the inputs during
one forward + backward (x.grad, which both produce, included). --sweep: forward + backward of
ours over BLOCK_V x num_warps (CONFIG in kernels/cross_entropy/op.py, shared by both kernels).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import PEAK_BYTES, bench, environment, save, table, warm_gpu

LAYOUTS = ("contiguous", "lm_view", "padded")


def _layout(x: torch.Tensor, layout: str, pad_to: int) -> torch.Tensor:
    """The logits as the op sees them; the padded ones' pad columns are 0 (the LM's are finite)."""
    if layout == "contiguous":
        return x
    padded = torch.zeros(x.shape[0], pad_to, device=x.device, dtype=x.dtype)
    padded[:, : x.shape[1]] = x
    return padded if layout == "padded" else padded[:, : x.shape[1]]


def _variants(op, layout: str, v: int) -> dict:
    """(x, y) -> loss of ours and of torch for a layout: with n_classes = v on the padded logits."""
    if layout == "padded":
        return {"ours": lambda x, y: op.cross_entropy(x, y, n_classes=v),
                "torch": lambda x, y: F.cross_entropy(x[:, :v].float(), y, ignore_index=-100)}
    return {"ours": op.cross_entropy, "torch": lambda x, y: F.cross_entropy(x.float(), y, ignore_index=-100)}


def _errors(fn, x, y, v, chunk=2048) -> tuple[float, float]:
    """Relative error of the loss and (L2) of the gradient of fn against fp64 (0 in the pad
    columns beyond v), on rows in chunks (an fp64 copy of all the logits would take 6.6 GB, its
    softmax as much again)."""
    xs = x.detach().requires_grad_()
    loss = fn(xs, y)
    loss.backward()
    valid = y != -100
    n_valid = valid.sum().item()
    loss_ref, d2, r2 = 0.0, 0.0, 0.0
    for i in range(0, x.shape[0], chunk):
        xd, yd = x[i : i + chunk, :v].double(), y[i : i + chunk]
        lse = torch.logsumexp(xd, -1)
        vd = valid[i : i + chunk]
        loss_ref += (lse - xd.gather(-1, yd.clamp(min=0)[:, None])[:, 0])[vd].sum().item()
        g = torch.softmax(xd, -1)
        g[torch.arange(len(yd), device=x.device), yd.clamp(min=0)] -= 1
        g = g * vd[:, None] / n_valid
        d2 += (xs.grad[i : i + chunk, :v].double() - g).pow(2).sum().item()
        d2 += xs.grad[i : i + chunk, v:].double().pow(2).sum().item()
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
    ap.add_argument("--pad-to", type=int, default=50288, help="padded vocabulary: row stride of lm_view, width of padded")
    ap.add_argument("--sweep", action="store_true", help="also time BLOCK_V x num_warps")
    args = ap.parse_args(argv)
    import kernels.cross_entropy.op as op

    n, v = args.rows, args.vocab
    gen = torch.Generator(device="cuda").manual_seed(0)
    base = (2.0 * torch.randn(n, v, device="cuda", generator=gen)).to(torch.bfloat16)
    y = torch.randint(0, v, (n,), device="cuda", generator=gen)
    y[2047::2048] = -100  # the last position of each sequence, as the LM's shifted labels
    read = n * v * base.element_size() / PEAK_BYTES * 1e3

    def floors_of(layout):
        write = read * (args.pad_to / v if layout == "padded" else 1.0)
        return {"fwd": read, "fwd_grad": read, "fwdbwd": 2 * read + write}

    warm_gpu()
    rows = []
    for layout in LAYOUTS:
        x = _layout(base, layout, args.pad_to)
        xs = x.detach().requires_grad_()
        floors = floors_of(layout)
        for name, fn in _variants(op, layout, v).items():
            row = {"layout": layout, "impl": name, **{f"floor_{k}_ms": f for k, f in floors.items()}}
            row["loss_err"], row["grad_err"] = _errors(fn, x, y, v)

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
    print(f"\ncross-entropy, {n} x {v} bf16 logits (padded: {n} x {args.pad_to}, n_classes {v}) (median ms; floor = bytes / {PEAK_BYTES:.1e} B/s; "
          f"err = rel. error vs fp64)\n" + table(rows, cols))

    sweep = []
    if args.sweep:
        saved = dict(op.CONFIG)
        for layout in LAYOUTS:
            xs = _layout(base, layout, args.pad_to).detach().requires_grad_()
            fn = _variants(op, layout, v)["ours"]
            for block in (1024, 2048, 4096, 8192, 16384):
                for warps in (4, 8, 16):
                    op.CONFIG.update(BLOCK_V=block, num_warps=warps)
                    ms = bench(lambda xs=xs, fn=fn: fn(xs, y).backward(), grad_to_none=[xs])
                    sweep.append({"layout": layout, "BLOCK_V": block, "num_warps": warps, "fwdbwd_ms": ms,
                                  "vs_floor": ms / floors_of(layout)["fwdbwd"]})
        op.CONFIG.clear()
        op.CONFIG.update(saved)
        print("\nsweep of forward + backward (ours)\n" + table(sweep, ["layout", "BLOCK_V", "num_warps", "fwdbwd_ms", "vs_floor"]))
    save("cross_entropy", {"env": environment(), "shape": [n, v], "pad_to": args.pad_to, "config": op.CONFIG,
                           "rows": rows, "sweep": sweep})


if __name__ == "__main__":
    main()

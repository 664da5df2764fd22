"""Benchmark of the short causal conv + SiLU: ours (Triton) vs PyTorch's nn.Conv1d path (what
`hades.models.layers.ShortConv` runs) vs fla 0.6.0's Triton `causal_conv1d` (when it imports),
with a correctness check of fla's against the reference on this GPU.

    python -m benchmarks.conv [--sweep]

Shapes: batch 8 x 2048 tokens, the conv widths of the Mamba-style mixers at width 1024:
Mamba2 (x, B, C: 2048 + 2 x 128), HADES (1024 + 2 x 128), Mamba (2048); bf16.

Two timings per pass: `*_ms` is the wall clock between CUDA events (`bench`: host launch cost
included, as an eager step sees it) and `*_kern_ms` the GPU time of the kernels alone
(`kernel_ms`: what the graph-captured training step sees); `bwd_kern_ms` = fwd+bwd less fwd.
Memory floors at this GPU's measured copy rate (`copy_rate`): forward x read + y written, backward
x and dy read + dx written (bf16; the weight and bias gradients are a few KB). --sweep also
times the forward and the backward alone (kernel time) under other kernels.conv.op.CONFIG
"fwd" / "bwd" choices and the first kernels (layout "tile") at every shape.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import bench, copy_rate, environment, kernel_ms, save, table, warm_gpu

SWEEP = [  # CONFIG["bwd"] of the stream layout: (BLOCK_T, BLOCK_C, SEG, num_warps); 16 tokens of 4
    # channels per lane spill (offline sm_90a: 255 registers, 240 bytes), 8 of 4 take 168 registers
    (bt, bc, seg, w)
    for bt, shapes in ((4, ((64, 1), (128, 1), (256, 2))), (8, ((64, 1), (128, 1), (128, 2), (256, 2), (256, 4))),
                       (16, ((64, 1), (128, 2), (256, 4))))
    for (bc, w) in shapes for seg in (128, 256)
]


def _sweep(x, w, bias, dy, floor_ms: float, floor_fwd_ms: float) -> list[dict]:
    """Kernel ms of the forward (no graph) and of the backward alone (autograd.grad on a kept
    graph) for each SWEEP config (the same one for both) and for the tile layouts, with their
    ratios to the floors."""
    from kernels.conv import op

    keep = {k: dict(v) for k, v in op.CONFIG.items()}
    xs, ws, bs = (a.detach().requires_grad_() for a in (x, w, bias))
    rows = []
    try:
        for cfg in [("tile",)] + SWEEP:
            if cfg[0] == "tile":
                op.CONFIG["bwd"] = dict(keep["bwd"], layout="tile")
                op.CONFIG["fwd"] = dict(keep["fwd"], layout="tile")
                label = dict(layout="tile", **keep["bwd_tile"])
            else:
                label = dict(layout="stream", **dict(zip(("BLOCK_T", "BLOCK_C", "SEG", "num_warps"), cfg)))
                op.CONFIG["bwd"] = dict(label)
                op.CONFIG["fwd"] = dict(label)
            with torch.no_grad():
                fwd = kernel_ms(lambda: op.causal_conv1d(x, w, bias, True))
            y = op.causal_conv1d(xs, ws, bs, True)
            ms = kernel_ms(lambda y=y: torch.autograd.grad(y, (xs, ws, bs), dy, retain_graph=True))
            rows.append({**label, "fwd_kern_ms": fwd, "fwd_vs_floor": fwd / floor_fwd_ms, "bwd_kern_ms": ms,
                         "vs_floor": ms / floor_ms})
    finally:
        op.CONFIG.update(keep)
    for key in ("fwd_kern_ms", "bwd_kern_ms"):
        print(f"sweep, {x.shape[-1]} channels: best {key[:3]} {min(rows, key=lambda r: r[key])}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--sweep", action="store_true", help="also time other CONFIG['bwd'] choices (backward alone)")
    args = ap.parse_args(argv)
    from kernels.conv.op import CONFIG, causal_conv1d
    from kernels.conv.reference import causal_conv1d_ref

    try:
        from fla.modules.convolution import causal_conv1d as fla_conv
    except Exception as e:  # noqa: BLE001 - reported in the table
        fla_conv, fla_err = None, f"{type(e).__name__}: {e}"
    b, t = args.batch, args.seqlen
    warm_gpu()
    rows = []
    for name, ch in (("mamba2", 2304), ("hades", 1280), ("mamba", 2048)):
        x = torch.randn(b, t, ch, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(ch, 4, device="cuda") * 0.5
        bias = torch.randn(ch, device="cuda")
        dy = torch.randn_like(x)
        variants = {
            "ours": lambda x, w, bias: causal_conv1d(x, w, bias, True),
            "torch": lambda x, w, bias: causal_conv1d_ref(x, w, bias, True),
        }
        if fla_conv is not None:
            variants["fla"] = lambda x, w, bias: fla_conv(x, w.to(x.dtype), bias.to(x.dtype), activation="silu")[0]
        rate = copy_rate()
        row = {"conv": name, "channels": ch, "floor_fwd_ms": 2 * x.numel() * 2 / rate * 1e3,
               "floor_bwd_ms": 3 * x.numel() * 2 / rate * 1e3}
        ref = causal_conv1d_ref(x.double(), w.double(), bias.double(), True)
        for v, fn in variants.items():
            xs, ws, bs = (a.detach().requires_grad_() for a in (x, w, bias))
            try:
                out = fn(xs, ws, bs)
                row[f"{v}_err"] = ((out.double() - ref).norm() / ref.norm()).item()

                def fwd(fn=fn, x=x, w=w, bias=bias):
                    with torch.no_grad():
                        fn(x, w, bias)

                def fwdbwd(fn=fn, xs=xs, ws=ws, bs=bs, dy=dy):
                    fn(xs, ws, bs).backward(dy)

                row[f"{v}_fwd_ms"] = bench(fwd)
                row[f"{v}_fwdbwd_ms"] = bench(fwdbwd, grad_to_none=[xs, ws, bs])
                row[f"{v}_fwd_kern_ms"] = kernel_ms(fwd)
                row[f"{v}_bwd_kern_ms"] = kernel_ms(fwdbwd, grad_to_none=[xs, ws, bs]) - row[f"{v}_fwd_kern_ms"]
                row[f"{v}_bwd_vs_floor"] = row[f"{v}_bwd_kern_ms"] / row["floor_bwd_ms"]
            except Exception as e:  # noqa: BLE001 - reported in the table
                row[f"{v}_err"] = f"{type(e).__name__}"
                print(f"{v} failed on {name}: {e}", flush=True)
        if args.sweep:
            row["sweep"] = _sweep(x, w, bias, dy, row["floor_bwd_ms"], row["floor_fwd_ms"])
        rows.append(row)
        print({k: v for k, v in row.items() if k != "sweep"}, flush=True)
    for row in rows:
        for v in ("torch", "fla"):
            if f"{v}_bwd_kern_ms" in row:
                row[f"{v}/ours_bwd"] = row[f"{v}_bwd_kern_ms"] / row["ours_bwd_kern_ms"]
    cols = ["conv", "channels", "ours_fwd_ms", "torch_fwd_ms", "fla_fwd_ms", "ours_fwdbwd_ms", "torch_fwdbwd_ms",
            "fla_fwdbwd_ms", "ours_err", "fla_err"]
    print(f"\nshort conv + SiLU, batch {b} x {t}, bf16 (median ms, CUDA events; err = rel. error vs fp64)\n"
          + table(rows, cols))
    cols = ["conv", "channels", "ours_fwd_kern_ms", "floor_fwd_ms", "ours_bwd_kern_ms", "floor_bwd_ms",
            "ours_bwd_vs_floor", "torch_bwd_kern_ms", "torch/ours_bwd", "fla_bwd_kern_ms", "fla/ours_bwd"]
    print(f"\nkernel time alone (ms; floors at {copy_rate() / 1e12:.2f} TB/s, this GPU's copy rate; CONFIG {CONFIG})\n"
          + table(rows, cols))
    if fla_conv is None:
        print("fla causal_conv1d unavailable:", fla_err)
    save("conv", {"env": environment(), "config": CONFIG, "copy_rate": copy_rate(), "rows": rows})


if __name__ == "__main__":
    main()

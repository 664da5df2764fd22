"""Benchmark of the short causal conv + SiLU: ours (Triton) vs PyTorch's nn.Conv1d path (what
`hades.models.layers.ShortConv` runs) vs fla 0.6.0's Triton `causal_conv1d` (when it imports),
with a correctness check of fla's against the reference on this GPU.

    python -m benchmarks.conv

Shapes: batch 8 x 2048 tokens, the conv widths of the Mamba-style mixers at width 1024:
Mamba2 (x, B, C: 2048 + 2 x 128), HADES (1024 + 2 x 128), Mamba (2048); bf16.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import PEAK_BYTES, bench, environment, save, table, warm_gpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=2048)
    args = ap.parse_args(argv)
    from kernels.conv.op import causal_conv1d
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
        row = {"conv": name, "channels": ch, "memory_floor_fwd_ms": 2 * x.numel() * 2 / PEAK_BYTES * 1e3}
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
            except Exception as e:  # noqa: BLE001 - reported in the table
                row[f"{v}_err"] = f"{type(e).__name__}"
                print(f"{v} failed on {name}: {e}", flush=True)
        rows.append(row)
        print(row, flush=True)
    cols = ["conv", "channels", "ours_fwd_ms", "torch_fwd_ms", "fla_fwd_ms", "ours_fwdbwd_ms", "torch_fwdbwd_ms",
            "fla_fwdbwd_ms", "memory_floor_fwd_ms", "ours_err", "fla_err"]
    print(f"\nshort conv + SiLU, batch {b} x {t}, bf16 (median ms; err = rel. error vs fp64)\n" + table(rows, cols))
    if fla_conv is None:
        print("fla causal_conv1d unavailable:", fla_err)
    save("conv", {"env": environment(), "rows": rows})


if __name__ == "__main__":
    main()

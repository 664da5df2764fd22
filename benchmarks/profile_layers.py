"""Where a training step's GPU time goes, per grid id: torch.profiler over one full step of the
train_throughput setup (width 1024, batch 8 x 2048, bf16 autocast), top CUDA kernels by time.

    python -m benchmarks.profile_layers [--only hades mamba2] [--layers 4] [--top 20]

Explains throughput gaps between mixers (e.g. HADES vs Mamba2) beyond the scan kernels.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import environment, save
from benchmarks.grid import grid_models


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/paper.yaml")
    ap.add_argument("--only", nargs="+", default=["hades", "mamba2"])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--cpu", action="store_true", help="also the top operators by host (CPU) time")
    args = ap.parse_args(argv)
    from torch.profiler import ProfilerActivity, profile

    from hades.models import build_model

    grid = grid_models(args.config, n_layer=args.layers, vocab_size=50277, kernel="auto")
    report = {}
    for gid in args.only:
        torch.manual_seed(0)
        model = build_model(grid[gid]).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        ids = torch.randint(0, 50277, (8, 2048), device="cuda")

        def step(model=model, opt=opt, ids=ids):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(2):
            step()
        torch.cuda.synchronize()
        acts = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if args.cpu else [])
        with profile(activities=acts) as prof:
            step()
            torch.cuda.synchronize()
        ka = prof.key_averages()
        total = sum(e.self_device_time_total for e in ka) / 1e3
        rows = sorted(((e.self_device_time_total / 1e3, e.count, e.key) for e in ka), reverse=True)[: args.top]
        print(f"\n{gid}: {args.layers} layers, one step, CUDA time {total:.1f} ms; top kernels (ms, calls, name):")
        for ms, n, key in rows:
            print(f"  {ms:8.2f} {n:5d}  {key[:110]}")
        if args.cpu:
            cpu_total = sum(e.self_cpu_time_total for e in ka) / 1e3
            crow = sorted(((e.self_cpu_time_total / 1e3, e.count, e.key) for e in ka), reverse=True)[: args.top]
            print(f"{gid}: host time {cpu_total:.1f} ms; top operators (ms, calls, name):")
            for ms, n, key in crow:
                print(f"  {ms:8.2f} {n:5d}  {key[:110]}")
        report[gid] = {"total_ms": total, "top": [{"ms": ms, "calls": n, "kernel": key} for ms, n, key in rows]}
        del model, opt
        torch.cuda.empty_cache()
    save("profile_layers", {"env": environment(), "args": vars(args), "report": report})


if __name__ == "__main__":
    main()

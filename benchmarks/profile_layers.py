"""Where a training step's GPU time goes, per grid id: torch.profiler over one full step of the
train_throughput setup (the trainer's eager step: width 1024, batch 8 x 2048, bf16 autocast),
top CUDA kernels by time.

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
    ap.add_argument("--by-op", action="store_true",
                    help="also the operators (forward and backward aten ops, with input shapes) by the GPU time of "
                         "the kernels they launched: which op of which layer part costs what")
    args = ap.parse_args(argv)
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.train_throughput import trainer_step

    grid = grid_models(args.config, n_layer=args.layers, vocab_size=50277, kernel="auto")
    report = {}
    for gid in args.only:
        step, model, _ = trainer_step(grid[gid], 8, 2048, "eager")
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        acts = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if args.cpu or args.by_op else [])
        with profile(activities=acts, record_shapes=args.by_op) as prof:
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
        if args.by_op:
            ops = [e for e in prof.key_averages(group_by_input_shape=True) if e.device_type.name == "CPU"]
            orow = sorted(((e.self_device_time_total / 1e3, e.count, e.key, str(e.input_shapes)[:90]) for e in ops),
                          reverse=True)[: 2 * args.top]
            print(f"{gid}: operators by the GPU time of their own kernels (ms, calls, op, input shapes):")
            for ms, n, key, shapes in orow:
                if ms > 0:
                    print(f"  {ms:8.3f} {n:5d}  {key[:40]:40s} {shapes}")
        report[gid] = {"total_ms": total, "top": [{"ms": ms, "calls": n, "kernel": key} for ms, n, key in rows]}
        del model, step
        torch.cuda.empty_cache()
    save("profile_layers", {"env": environment(), "args": vars(args), "report": report})


if __name__ == "__main__":
    main()

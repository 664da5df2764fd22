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


def _top(events, attr: str, n: int) -> list[tuple[float, int, str, str]]:
    """The n events with the largest `attr` (us): (ms, calls, name, input shapes), largest first."""
    rows = [(getattr(e, attr) / 1e3, e.count, e.key, str(e.input_shapes)[:90]) for e in events]
    return sorted(rows, reverse=True)[:n]


def _print(title: str, rows, shapes: bool = False) -> None:
    print(("\n" if not shapes else "") + title)
    for ms, n, key, shp in rows:
        print(f"  {ms:8.3f} {n:5d}  {key[:40]:40s} {shp}" if shapes else f"  {ms:8.2f} {n:5d}  {key[:110]}")


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
        # kernels only: with CPU activity on, the operators also carry the device time of the
        # kernels they launched, and Inductor's "## Call CompiledFxGraph ##" ranges sit on the
        # GPU timeline over their kernels; either would count kernels twice
        kernels = [e for e in ka if e.device_type.name == "CUDA" and not e.key.startswith("## ")]
        total = sum(e.self_device_time_total for e in kernels) / 1e3
        rows = _top(kernels, "self_device_time_total", args.top)
        _print(f"{gid}: {args.layers} layers, one step, CUDA time {total:.1f} ms; top kernels (ms, calls, name):", rows)
        if args.cpu:
            cpu_total = sum(e.self_cpu_time_total for e in ka) / 1e3
            _print(f"{gid}: host time {cpu_total:.1f} ms; top operators (ms, calls, name):",
                   _top(ka, "self_cpu_time_total", args.top))
        if args.by_op:
            ops = [e for e in prof.key_averages(group_by_input_shape=True) if e.device_type.name == "CPU"]
            _print(f"{gid}: operators by the GPU time of their own kernels (ms, calls, op, input shapes):",
                   [r for r in _top(ops, "self_device_time_total", 2 * args.top) if r[0] > 0], shapes=True)
        report[gid] = {"total_ms": total, "top": [{"ms": ms, "calls": n, "kernel": key} for ms, n, key, _ in rows]}
        del model, step
        torch.cuda.empty_cache()
    save("profile_layers", {"env": environment(), "args": vars(args), "report": report})


if __name__ == "__main__":
    main()

"""End-to-end training throughput of every grid id on one GPU (issue 4, acceptance 3).

    python -m benchmarks.train_throughput [--layers 4 16] [--only hades mamba2] [--batch 8] [--seqlen 2048]

Each model of config/paper.yaml at its paper width (1024) with `--layers` layers (the attention
baselines keep their SwiGLU MLPs), GPT-NeoX vocabulary (50,277), bf16 autocast, fused AdamW:
a few warm-up steps (Triton compilation), then timed full steps (forward, backward, optimizer),
each timed alone with CUDA events; the median is reported (min-max beside it).
Prints tokens/s, ms/step and peak memory, and HADES / Mamba2 (goal >= 1.3: HADES has half the
SSM width). `--budget-s` stops starting new models once spent (rows left out say so).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from benchmarks.common import environment, save, table
from benchmarks.grid import grid_models

ORDER = ["hades", "mamba2", "mamba", "hades_no_balance", "hades_no_diversity", "hades_shared_only", "hades_expert_only",
         "linear_attn", "retnet", "deltanet", "smamba"]


def run_one(cfg, batch, seqlen, warmup, steps):
    from hades.models import build_model

    torch.cuda.empty_cache()
    torch.manual_seed(0)
    model = build_model(cfg).cuda()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (batch, seqlen), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(warmup):
        loss = step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):  # each step timed on its own (CUDA events), the median reported
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        loss = step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    dt = statistics.median(times)
    row = {"params_M": n_params / 1e6, "ms_per_step": dt * 1e3, "tokens_per_s": batch * seqlen / dt,
           "peak_mem_GiB": torch.cuda.max_memory_allocated() / 2**30, "loss": loss.item(),
           "ms_min_max": f"{min(times) * 1e3:.1f}-{max(times) * 1e3:.1f}"}
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/paper.yaml")
    ap.add_argument("--layers", type=int, nargs="+", default=[4], help="one or more depths")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--budget-s", type=float, default=280)
    ap.add_argument("--only", nargs="*", help="grid ids (default: all)")
    args = ap.parse_args(argv)
    start, rows, ratios = time.perf_counter(), [], {}
    for n_layer in args.layers:
        grid = grid_models(args.config, n_layer=n_layer, vocab_size=50277, kernel="auto")
        ids = [g for g in ORDER if g in grid] + [g for g in grid if g not in ORDER]
        if args.only:
            ids = [g for g in ids if g in args.only]
        by = {}
        for gid in ids:
            row = {"grid_id": gid, "arch": grid[gid].arch, "layers": n_layer}
            if time.perf_counter() - start > args.budget_s:
                row["error"] = "not run (time budget of this call spent)"
            else:
                t0 = time.perf_counter()
                try:
                    row.update(run_one(dataclasses.replace(grid[gid]), args.batch, args.seqlen, args.warmup, args.steps))
                except Exception as e:  # noqa: BLE001 - reported in the table
                    row["error"] = f"{type(e).__name__}: {str(e)[:120]}"
                row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            by[gid] = row
            print(row, flush=True)
        if "tokens_per_s" in by.get("hades", {}) and "tokens_per_s" in by.get("mamba2", {}):
            ratios[n_layer] = by["hades"]["tokens_per_s"] / by["mamba2"]["tokens_per_s"]
    cols = ["grid_id", "arch", "layers", "params_M", "tokens_per_s", "ms_per_step", "ms_min_max", "peak_mem_GiB",
            "wall_s", "error"]
    print(f"\ntraining throughput: width 1024, batch {args.batch} x {args.seqlen}, bf16 autocast, fused AdamW, "
          f"median of {args.steps} steps\n" + table(rows, cols))
    for n_layer, ratio in ratios.items():
        print(f"{n_layer} layers: HADES / Mamba2 tokens/s = {ratio:.2f} (goal >= 1.3)")
    save("train_throughput", {"env": environment(), "args": vars(args), "rows": rows, "hades_over_mamba2": ratios})


if __name__ == "__main__":
    main()

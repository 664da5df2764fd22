"""End-to-end training throughput of every grid id on one GPU (issue 4, acceptance 3).

    python -m benchmarks.train_throughput [--layers 4 16] [--only hades mamba2] [--mode eager graph]

Each model of config/paper.yaml at its paper width (1024) with `--layers` layers (the attention
baselines keep their SwiGLU MLPs), GPT-NeoX vocabulary (50,277), batch 8 x 2048, bf16 autocast,
timed through the trainer's own step (hades/train/loop.py): `micro_step` (forward, fused
cross-entropy + auxiliary losses, backward), the host reading the step's loss (the divergence
check), gradient clipping, the trainer's AdamW (paper parameter groups) and its schedule, with
the token ids copied from the host each step. `--mode graph` is `train.cuda_graph` (the
micro-step replayed as a CUDA graph, hades/train/graph.py), `eager` the eager step. A few
warm-up steps (Triton compilation, the capture), then timed steps, each timed alone with CUDA
events; the median is reported (min-max beside it). Prints tokens/s, ms/step and peak reserved
memory (the graph's private pool is reserved, not allocated), and HADES / Mamba2 per mode
(goal >= 1.3: HADES has half the SSM width). `--budget-s` stops starting new models once spent.
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


def trainer_step(cfg, batch, seqlen, mode="eager"):
    """The trainer's optimizer step for model config `cfg` on one GPU (see the module docstring):
    returns (step, model, graph); step() runs one update and returns the loss."""
    from hades.config import TrainConfig
    from hades.models import build_model
    from hades.train.graph import GraphedMicroStep
    from hades.train.loop import micro_step
    from hades.train.optim import build_optimizer, build_scheduler

    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = build_model(cfg).to(dev)
    tcfg = TrainConfig(steps=1000, lr=1e-4, warmup_steps=10, seq_len=seqlen, global_batch=batch, micro_batch=batch)
    opt = build_optimizer(model, tcfg)
    sched = build_scheduler(opt, tcfg)
    ids = torch.randint(0, cfg.vocab_size, (batch, seqlen + 1))  # on the host, as the trainer's data

    def fwd_bwd(w):
        return micro_step(model, w, accum=1, bf16=True, kernel=cfg.kernel)

    graph = GraphedMicroStep(model, fwd_bwd, dev, strict=True, label=cfg.arch) if mode == "graph" else None

    def step():
        if graph is not None:
            graph.zero_grad()
            graph(ids)
            stats, _ = graph.stats()
        else:
            stats, _ = fwd_bwd(ids.to(dev, non_blocking=True))
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        loss, _ = float(stats[0]), float(gn)  # the trainer's divergence check syncs here
        opt.step()
        sched.step()
        if graph is None:
            opt.zero_grad(set_to_none=True)
        return loss

    return step, model, graph


def run_one(cfg, batch, seqlen, warmup, steps, mode="eager"):
    torch.cuda.empty_cache()
    step, model, graph = trainer_step(cfg, batch, seqlen, mode)
    n_params = sum(p.numel() for p in model.parameters())
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
    if graph is not None and not graph.captured:
        raise RuntimeError(f"not captured: {graph.failed}")
    dt = statistics.median(times)
    return {"params_M": n_params / 1e6, "ms_per_step": dt * 1e3, "tokens_per_s": batch * seqlen / dt,
            "peak_reserved_GiB": torch.cuda.max_memory_reserved() / 2**30, "loss": loss,
            "ms_min_max": f"{min(times) * 1e3:.1f}-{max(times) * 1e3:.1f}"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/paper.yaml")
    ap.add_argument("--layers", type=int, nargs="+", default=[4], help="one or more depths")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps (graph mode captures after 3)")
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--budget-s", type=float, default=280)
    ap.add_argument("--only", nargs="*", help="grid ids (default: all)")
    ap.add_argument("--mode", nargs="+", choices=["eager", "graph"], default=["eager", "graph"],
                    help="the trainer's eager step and/or train.cuda_graph")
    ap.add_argument("--mamba-unfused", action="store_true",
                    help="also Mamba with its time step, gate and split in plain torch around the Triton scan "
                         "(Mamba.fused_glue = False, row 'mamba_unfused'): the fusion's before and after in one run")
    args = ap.parse_args(argv)
    from hades.models.mixers.mamba import Mamba

    start, rows, ratios = time.perf_counter(), [], {}
    for n_layer in args.layers:
        grid = grid_models(args.config, n_layer=n_layer, vocab_size=50277, kernel="auto")
        ids = [g for g in ORDER if g in grid] + [g for g in grid if g not in ORDER]
        if args.only:
            ids = [g for g in ids if g in args.only]
        if args.mamba_unfused and "mamba" in ids:
            ids.insert(ids.index("mamba") + 1, "mamba_unfused")
        by = {}
        for gid in ids:
            cfg_id, Mamba.fused_glue = ("mamba", False) if gid == "mamba_unfused" else (gid, True)
            for mode in args.mode:
                row = {"grid_id": gid, "arch": grid[cfg_id].arch, "layers": n_layer, "mode": mode}
                if time.perf_counter() - start > args.budget_s:
                    row["error"] = "not run (time budget of this call spent)"
                else:
                    t0 = time.perf_counter()
                    try:
                        row.update(run_one(dataclasses.replace(grid[cfg_id]), args.batch, args.seqlen, args.warmup, args.steps,
                                           mode))
                    except Exception as e:  # noqa: BLE001 - reported in the table
                        row["error"] = f"{type(e).__name__}: {str(e)[:120]}"
                    row["wall_s"] = time.perf_counter() - t0
                rows.append(row)
                by[gid, mode] = row
                print(row, flush=True)
        Mamba.fused_glue = True
        for mode in args.mode:
            for gid in ("hades", "mamba", "mamba_unfused"):
                if "tokens_per_s" in by.get((gid, mode), {}) and "tokens_per_s" in by.get(("mamba2", mode), {}):
                    ratios[f"{gid}, {n_layer} layers, {mode}"] = (by[gid, mode]["tokens_per_s"]
                                                                  / by["mamba2", mode]["tokens_per_s"])
    cols = ["grid_id", "arch", "layers", "mode", "params_M", "tokens_per_s", "ms_per_step", "ms_min_max",
            "peak_reserved_GiB", "wall_s", "error"]
    print(f"\ntraining throughput: width 1024, batch {args.batch} x {args.seqlen}, bf16 autocast, the trainer's step, "
          f"median of {args.steps} steps\n" + table(rows, cols))
    for key, ratio in ratios.items():
        goal = "goal >= 1.3" if key.startswith("hades") else "goal >= 0.9 at 16 layers"
        print(f"{key}: tokens/s over Mamba2's = {ratio:.2f} ({goal})")
    save("train_throughput", {"env": environment(), "args": vars(args), "rows": rows, "over_mamba2": ratios})


if __name__ == "__main__":
    main()

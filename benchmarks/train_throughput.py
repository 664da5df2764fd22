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


def run_one(cfg, batch, seqlen, warmup, steps, cuda_graph=False):
    from hades.models import build_model

    torch.cuda.empty_cache()
    torch.manual_seed(0)
    model = build_model(cfg).cuda()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True, capturable=cuda_graph)
    ids = torch.randint(0, cfg.vocab_size, (batch, seqlen), device="cuda")

    def eager_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        if not cuda_graph:
            opt.zero_grad(set_to_none=True)
        return loss

    step = eager_step
    if cuda_graph:
        # experiment (not used by the trainer): the whole step (forward, backward, AdamW) as one
        # CUDA graph, which takes the host out of the loop -> the step's GPU-bound time
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                opt.zero_grad(set_to_none=True)
                eager_step()
        torch.cuda.current_stream().wait_stream(side)
        opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            graph_loss = eager_step()

        def step():
            graph.replay()
            return graph_loss

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


def graph_matches_eager(cfg, batch, seqlen, n_steps=6, warmup=2) -> float:
    """Max relative difference of the per-step losses of the CUDA-graph replay and the eager
    step over n_steps from the same init and data (checks that the replayed step trains)."""
    from hades.models import build_model

    losses = {}
    for mode in ("eager", "graph"):
        torch.manual_seed(0)
        model = build_model(cfg).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True, capturable=mode == "graph")
        ids = torch.randint(0, cfg.vocab_size, (batch, seqlen), device="cuda", generator=torch.Generator("cuda").manual_seed(1))

        def step(model=model, opt=opt, ids=ids):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(ids, labels=ids).loss
            loss.backward()
            opt.step()
            return loss

        out = []
        if mode == "eager":
            for _ in range(n_steps):
                out.append(step().item())
                opt.zero_grad(set_to_none=True)
        else:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    opt.zero_grad(set_to_none=True)
                    out.append(step().item())
            torch.cuda.current_stream().wait_stream(side)
            opt.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                graph_loss = step()
            for _ in range(n_steps - warmup):
                graph.replay()
                out.append(graph_loss.item())
        losses[mode] = out
    print(f"{cfg.arch}: eager losses {losses['eager']}\n{cfg.arch}: graph losses {losses['graph']}", flush=True)
    return max(abs(a - b) / abs(a) for a, b in zip(losses["eager"], losses["graph"]))


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
    ap.add_argument("--cuda-graph", action="store_true",
                    help="experiment: replay the whole step as a CUDA graph (the GPU-bound time)")
    args = ap.parse_args(argv)
    if args.cuda_graph:  # the replayed step must train like the eager one
        for gid in [g for g in ("hades", "mamba2") if not args.only or g in args.only]:
            cfg = grid_models(args.config, n_layer=2, vocab_size=50277, kernel="auto")[gid]
            print(f"{gid}: CUDA-graph vs eager losses over 6 steps, max rel. diff "
                  f"{graph_matches_eager(cfg, 2, 512):.2e}", flush=True)
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
                    row.update(run_one(dataclasses.replace(grid[gid]), args.batch, args.seqlen, args.warmup, args.steps, args.cuda_graph))
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

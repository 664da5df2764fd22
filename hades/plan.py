"""`hades plan CONFIG`: the jobs of a study per stage and an estimate of their GPU-hours.

Run it before submitting the paper to a cluster (docs/cluster.md). The estimate is arithmetic
on the config, not a measurement; its assumptions are the module constants below, printed with
the table, and each can be overridden on the command line.

- Training: FLOPs = 6 * N * tokens (forward + backward, Kaplan et al. 2020), N the exact parameter
  count of the built model (hades.params: meta device, nothing allocated), tokens = steps *
  global_batch * seq_len. Throughput = peak bf16 FLOP/s * MFU. An MFU of 0.35 is what well-tuned
  ~400M-parameter training reaches on A100s; our SSD and scan kernels are measured against
  mamba_ssm's (docs/design.md "GPU reference numbers"), so this is the planning figure, not a
  promise.
- Training from measured step times: where MEASURED_TRAIN_TOKENS_PER_S has the experiment's
  (arch, d_model, n_layer, d_state), its GPU-hours are tokens / that rate instead: the trainer's
  step timed on one GPU (benchmarks/train_throughput.py, graph mode, batch 8 x 2048, bf16;
  docs/benchmarks.md sections 8 to 10), so these are hours of *that* GPU (an H200), for
  data-parallel training without its communication. The ablations of an arch share its rate
  (their 16-layer steps are within 7% of it, docs/benchmarks.md section 3). `--train-model`
  uses the FLOP model for every experiment.
- Evaluation (lm_eval): forward only, 2 * N FLOPs per token, over the token counts of the nine
  tasks (EVAL_TASK_TOKENS: documents x choices x mean request length, rounded), at MFU 0.05:
  log-likelihood requests are short and padded, the GPU is mostly idle.
- Passkey: one forward over every prompt (sum of lengths x depths x trials) plus the greedy
  decoding of the key, MFU 0.05.
- Data: a CPU stage (streaming and tokenising the Pile): CPU-hours at TOKENIZE_TOKENS_PER_S
  per core.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from hades.config import Config, load_config
from hades.params import count_params

PEAK_TFLOPS = 312.0  # A100 bf16 dense, the paper's GPUs
TRAIN_MFU = 0.35
EVAL_MFU = 0.05
TOKENIZE_TOKENS_PER_S = 500_000  # HF `tokenizers` (Rust) per core, GPT-NeoX BPE on web text

# (arch, d_model, n_layer, d_state) -> (training tokens/s of one GPU, where it was measured):
# `python -m benchmarks.train_throughput --layers 48 --mode graph` (docs/benchmarks.md section 10)
MEASURED_TRAIN_TOKENS_PER_S = {
    ("hades", 1024, 48, 128): (150_942, "H200, 2026-12-04, section 10 call 6"),
    ("mamba2", 1024, 48, 128): (111_055, "H200, 2026-12-04, section 10 call 6"),
    ("mamba", 1024, 48, 16): (102_911, "H200, 2026-12-04, section 10 call 4"),
}

# tokens scored per task (full test/validation split, every choice): documents x choices x
# mean tokens per request (context + continuation), rounded up
EVAL_TASK_TOKENS = {
    "wikitext": 300_000,  # 62 test documents, rolling windows
    "lambada_openai": 5153 * 80,
    "piqa": 1838 * 2 * 60,
    "hellaswag": 10042 * 4 * 120,
    "winogrande": 1267 * 2 * 40,
    "arc_easy": 2376 * 4 * 50,
    "arc_challenge": 1172 * 4 * 55,
    "boolq": 3270 * 2 * 160,
    "openbookqa": 500 * 4 * 35,
}


def plan(
    cfg: Config,
    peak_tflops: float = PEAK_TFLOPS,
    train_mfu: float = TRAIN_MFU,
    eval_mfu: float = EVAL_MFU,
    train_model: bool = False,
) -> dict:
    """Stages with job counts, FLOPs, GPU-hours and wall-clock hours per job. train_model: the
    training GPU-hours from the FLOP model for every experiment (else from
    MEASURED_TRAIN_TOKENS_PER_S where it has the experiment's shape)."""
    params = {gid: row["params"] for gid, row in count_params(cfg).items()}
    flops_per_gpu_s = peak_tflops * 1e12
    gpus_train = cfg.resources.gpus_per_train_job or 1  # a CPU study is planned as on one GPU
    gpus_eval = cfg.resources.gpus_per_eval_job or 1
    stages = []

    train_flops, train_tokens, gpu_h, per_exp = 0.0, 0, 0.0, {}
    for gid, exp in cfg.experiments.items():
        tokens = exp.train.steps * exp.train.global_batch * exp.train.seq_len
        flops = 6 * params[gid] * tokens
        train_tokens += tokens
        train_flops += flops
        m = exp.model
        rate = None if train_model else MEASURED_TRAIN_TOKENS_PER_S.get((m.arch, m.d_model, m.n_layer, m.d_state))
        model_h = flops / (flops_per_gpu_s * train_mfu) / 3600
        hours = tokens / rate[0] / 3600 if rate else model_h
        per_exp[gid] = dict(gpu_hours=hours, model_gpu_hours=model_h,
                            source=f"measured {rate[0]:,} tokens/s ({rate[1]})" if rate else "FLOP model")
        gpu_h += hours
    measured = [g for g, e in per_exp.items() if e["source"] != "FLOP model"]
    assumption = f"6*N*tokens at MFU {train_mfu} of {peak_tflops:g} TFLOP/s"
    if measured:
        assumption = (f"{len(measured)} of {len(per_exp)} from measured step times (one H200 each: "
                      f"{', '.join(measured)}), the rest " + assumption)
    stages.append(
        dict(
            stage="train",
            jobs=len(cfg.experiments),
            gpus_per_job=gpus_train,
            tokens=train_tokens,
            flops=train_flops,
            gpu_hours=gpu_h,
            wall_hours_per_job=gpu_h / len(cfg.experiments) / gpus_train,
            assumption=assumption,
            per_experiment=per_exp,
        )
    )

    tasks = cfg.eval.tasks
    limit = cfg.eval.limit
    eval_tokens = sum(EVAL_TASK_TOKENS.get(t, 0) for t in tasks)
    unknown = [t for t in tasks if t not in EVAL_TASK_TOKENS]
    if limit:
        eval_tokens = min(eval_tokens, limit * len(tasks) * 4 * cfg.eval.max_length)
    eval_flops = sum(2 * n * eval_tokens for n in params.values())
    gpu_h = eval_flops / (flops_per_gpu_s * eval_mfu) / 3600
    stages.append(
        dict(
            stage="lm_eval",
            jobs=len(cfg.experiments),
            gpus_per_job=gpus_eval,
            tokens=eval_tokens * len(cfg.experiments),
            flops=eval_flops,
            gpu_hours=gpu_h,
            wall_hours_per_job=gpu_h / len(cfg.experiments) / gpus_eval,
            assumption=f"2*N*tokens at MFU {eval_mfu}"
            + (f"; tasks without a size estimate: {', '.join(unknown)}" if unknown else ""),
        )
    )

    pk = cfg.passkey
    models = pk.models
    prompts = len(pk.depths) * pk.trials
    pk_tokens = sum(pk.lengths) * prompts
    decode_tokens = len(pk.lengths) * prompts * (pk.key_digits + 2)
    pk_flops = sum(2 * params[m] * (pk_tokens + decode_tokens) for m in models)
    gpu_h = pk_flops / (flops_per_gpu_s * eval_mfu) / 3600
    stages.append(
        dict(
            stage="passkey",
            jobs=len(models),
            gpus_per_job=gpus_eval,
            tokens=(pk_tokens + decode_tokens) * len(models),
            flops=pk_flops,
            gpu_hours=gpu_h,
            wall_hours_per_job=gpu_h / max(len(models), 1) / gpus_eval,
            assumption=f"one forward per prompt + greedy key decoding at MFU {eval_mfu}",
        )
    )

    an = cfg.analysis
    an_models = an.models
    an_tokens = an.delta_max_tokens + 64
    an_flops = sum(2 * params[m] * an_tokens for m in an_models)
    gpu_h = an_flops / (flops_per_gpu_s * eval_mfu) / 3600
    stages.append(
        dict(
            stage="analysis",
            jobs=len(an_models),
            gpus_per_job=gpus_eval,
            tokens=an_tokens * len(an_models),
            flops=an_flops,
            gpu_hours=gpu_h,
            wall_hours_per_job=gpu_h / max(len(an_models), 1) / gpus_eval,
            assumption="forward over the sampled documents",
        )
    )

    data_tokens = cfg.data.max_train_tokens or max(
        (e.train.steps * e.train.global_batch * e.train.seq_len for e in cfg.experiments.values()),
        default=0,
    )
    stages.append(
        dict(
            stage="tokenize",
            jobs=cfg.data.num_shards,
            gpus_per_job=0,
            tokens=data_tokens,
            flops=0.0,
            gpu_hours=0.0,
            cpu_hours=data_tokens / TOKENIZE_TOKENS_PER_S / 3600,
            wall_hours_per_job=data_tokens
            / TOKENIZE_TOKENS_PER_S
            / 3600
            / cfg.data.num_shards,
            assumption=f"CPU: {TOKENIZE_TOKENS_PER_S:,} tokens/s per core",
        )
    )
    total = sum(s["gpu_hours"] for s in stages)
    return dict(config=cfg.source, params=params, stages=stages, total_gpu_hours=total)


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    exp = int(math.floor(math.log10(abs(x))))
    return f"{x / 10**exp:.2f}e{exp}" if abs(exp) >= 4 else f"{x:,.1f}"


def format_plan(p: dict) -> str:
    lines = [f"plan for {p['config']}", "", "parameters (meta-device build):"]
    lines += [f"  {gid:20s} {n / 1e6:8.1f}M" for gid, n in p["params"].items()]
    lines += [
        "",
        f"{'stage':10s} {'jobs':>5s} {'GPUs/job':>8s} {'tokens':>10s} {'FLOPs':>10s} "
        f"{'GPU-h':>10s} {'h/job':>8s}  assumption",
    ]
    for s in p["stages"]:
        gpu_h = _fmt(s["gpu_hours"]) if s["gpus_per_job"] else f"{_fmt(s['cpu_hours'])} CPU-h"
        lines.append(
            f"{s['stage']:10s} {s['jobs']:5d} {s['gpus_per_job']:8d} {_fmt(s['tokens']):>10s} "
            f"{_fmt(s['flops']):>10s} {gpu_h:>10s} {_fmt(s['wall_hours_per_job']):>8s}  {s['assumption']}"
        )
    train = next((s for s in p["stages"] if s["stage"] == "train"), None)
    if train and any(e["source"] != "FLOP model" for e in train["per_experiment"].values()):
        lines += ["", "training per experiment (GPU-hours; FLOP model beside the measured ones):"]
        for gid, e in train["per_experiment"].items():
            beside = f"  (model {_fmt(e['model_gpu_hours'])})" if e["source"] != "FLOP model" else ""
            lines.append(f"  {gid:20s} {_fmt(e['gpu_hours']):>10s}  {e['source']}{beside}")
    lines += ["", f"total: {_fmt(p['total_gpu_hours'])} GPU-hours"]
    return "\n".join(lines)


def run(config_path: str | Path, as_json: bool = False, **assumptions) -> str:
    p = plan(load_config(config_path), **assumptions)
    return json.dumps(p, indent=2) if as_json else format_plan(p)

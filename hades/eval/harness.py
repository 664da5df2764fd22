"""Zero-shot evaluation with lm-evaluation-harness through its documented entry points.

docs/paper.md "Evaluation": wikitext (word perplexity), lambada_openai (perplexity, acc), piqa
(acc), hellaswag (acc_norm), winogrande (acc), arc_easy (acc), arc_challenge (acc_norm), boolq
(acc), openbookqa (acc_norm); "Avg." = mean of the 8 accuracies.

The model goes in as an instance, `HFLM(pretrained=<HadesForCausalLM>, tokenizer=...)`, and the
run is `lm_eval.simple_evaluate(model=lm, tasks=..., task_manager=TaskManager(include_path=...))`
(STYLE.md: no wrapper that skips HFLM.__init__). HFLM scores right-padded batches with one forward
pass each; our models are causal, so padding on the right never reaches the scored positions.

`evaluate_checkpoint` is the unit of work of the `lm_eval` rule: rebuild the model from its
checkpoint (never from flags), evaluate, write results/eval/{model}/lm_eval.json atomically (all
paper metrics, settings, the config, the checkpoint's provenance), and mirror the metrics into
the model's MLflow run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hades.io import UNKNOWN, git_info, sha256_file, write_json

from .taskspec import EvalTaskError, TaskPlan, check_tasks, default_local_data, render_tasks

log = logging.getLogger(__name__)

# (task, lm-eval metric, column label); the first two are perplexities, the rest accuracies
PAPER_METRICS: tuple[tuple[str, str, str], ...] = (
    ("wikitext", "word_perplexity", "Wiki ppl"),
    ("lambada_openai", "perplexity", "LMB ppl"),
    ("lambada_openai", "acc", "LMB acc"),
    ("boolq", "acc", "BoolQ"),
    ("hellaswag", "acc_norm", "Hella"),
    ("winogrande", "acc", "Wino"),
    ("arc_easy", "acc", "ARC-e"),
    ("arc_challenge", "acc_norm", "ARC-c"),
    ("piqa", "acc", "PIQA"),
    ("openbookqa", "acc_norm", "OBQA"),
)
ACC_METRICS = tuple(f"{t}/{m}" for t, m, _ in PAPER_METRICS if m.startswith("acc"))
PPL_METRICS = tuple(f"{t}/{m}" for t, m, _ in PAPER_METRICS if not m.startswith("acc"))
# the project tasks' own metrics (default study)
TOY_METRICS: tuple[tuple[str, str, str], ...] = (
    ("toy_ppl", "word_perplexity", "toy word ppl"),
    ("toy_ppl", "token_perplexity", "toy token ppl"),
    ("toy_cloze", "acc", "toy cloze acc"),
    ("toy_cloze", "perplexity", "toy cloze ppl"),
)
AVG_KEY = "avg_acc"


# --- the adapter ---------------------------------------------------------------------------------


def make_lm(model, tokenizer, *, batch_size: int, max_length: int, precision: str = "auto"):
    """lm-eval's HFLM around a model instance. precision: auto (bf16 autocast on CUDA), fp32, bf16."""
    from lm_eval.models.huggingface import HFLM

    if tokenizer.eos_token_id is None:
        raise EvalTaskError(
            "the tokenizer defines no eos_token: lm-eval needs one as the prefix token of rolling perplexity"
        )
    vocab = model.config.vocab_size
    if len(tokenizer) > vocab:
        raise EvalTaskError(
            f"tokenizer/model mismatch: the tokenizer has {len(tokenizer)} tokens but the model was built "
            f"for vocab_size {vocab}"
        )
    use_bf16 = precision == "bf16" or (precision == "auto" and model.device.type == "cuda")
    model.eval()
    return HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        backend="causal",  # model_type hades_lm is Auto-registered, but not in transformers' static name list
        batch_size=batch_size,
        max_length=max_length,
        mixed_precision_dtype=torch.bfloat16 if use_bf16 else None,
    )


def run_lm_eval(
    model,
    tokenizer,
    tasks: Sequence[str],
    local_data: Mapping[str, str] | None = None,
    *,
    batch_size: int = 8,
    max_length: int = 2048,
    limit: int | float | None = None,
    samples: Mapping[str, Sequence[int]] | None = None,
    offline: bool = True,
    bootstrap_iters: int = 0,
    precision: str = "auto",
    seed: int = 1234,
) -> tuple[dict, TaskPlan]:
    """Evaluate a model instance on `tasks`; returns lm-eval's results dict and the task plan.

    limit: the first that many docs of every task; samples: {task: doc indices} instead (lm-eval
    takes one or the other)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = make_lm(model, tokenizer, batch_size=batch_size, max_length=max_length, precision=precision)
    with tempfile.TemporaryDirectory(prefix="hades-lm-eval-") as run_dir:
        plan = render_tasks(tasks, local_data, run_dir, offline=offline,
                            token_count=lambda text: len(lm.tok_encode(text)))
        # Indexing lm-eval's ~14k stock YAMLs takes most of a minute on a small CPU: only do it
        # when a task runs from its stock (hub) definition; rendered tasks include theirs by path.
        task_manager = TaskManager(
            include_path=str(plan.include_dir) if plan.include_dir else None,
            include_defaults=plan.needs_stock_index,
        )
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(plan.names),
            task_manager=task_manager,
            num_fewshot=0,
            limit=limit,
            samples={t: list(ix) for t, ix in samples.items()} if samples is not None else None,
            bootstrap_iters=bootstrap_iters,
            log_samples=False,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    if results is None:  # only non-zero ranks of a distributed run get None
        raise RuntimeError("lm_eval.simple_evaluate returned no results")
    return results, plan


# --- metrics -------------------------------------------------------------------------------------


def extract_metrics(lm_results: Mapping[str, Any]) -> dict[str, float]:
    """lm-eval's {"results": {task: {"acc,none": x, ...}}} -> {"task/metric": x} (filter "none",
    stderr dropped) plus "avg_acc" when all 8 paper accuracies are present."""
    out: dict[str, float] = {}
    for task, values in lm_results.get("results", {}).items():
        for key, value in values.items():
            metric, _, filt = key.partition(",")
            if filt != "none" or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            out[f"{task}/{metric}"] = float(value)
    avg = average_accuracy(out)
    if avg is not None:
        out[AVG_KEY] = avg
    return out


def average_accuracy(metrics: Mapping[str, float]) -> float | None:
    """docs/paper.md "Evaluation": "Avg." = mean of the 8 accuracies; None unless all 8 are there. A
    non-finite accuracy makes the mean non-finite (not None): a broken evaluation must show in the
    tables, not look like a task that was not run."""
    values = [metrics.get(k) for k in ACC_METRICS]
    if any(v is None for v in values):
        return None
    return sum(values) / len(values)


# --- checkpoints ---------------------------------------------------------------------------------


def load_tokenizer_for(checkpoint_dir: Path):
    """The tokenizer saved with a checkpoint (hades.data.tokenizer.load_tokenizer when present)."""
    tok_file = checkpoint_dir / "tokenizer.json"
    try:
        from hades.data.tokenizer import load_tokenizer
    except ImportError:
        load_tokenizer = None
    if load_tokenizer is not None:
        return load_tokenizer(tok_file if tok_file.is_file() else checkpoint_dir)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint_dir)


def check_model_matches(model, expected, where: str) -> None:
    """The checkpoint's architecture is the experiment's (vocab_size aside, which the tokenizer
    fills): evaluating stale weights under a changed config would mix results silently."""
    got = dataclasses.asdict(model.config.to_model_config())
    want = dataclasses.asdict(expected)
    diff = {k: (got[k], want[k]) for k in want if k != "vocab_size" and got.get(k) != want[k]}
    if diff:
        shown = ", ".join(f"{k}={a!r} (config: {b!r})" for k, (a, b) in list(diff.items())[:4])
        raise EvalTaskError(f"{where}: the checkpoint's model differs from the config: {shown}")


def load_checkpoint(checkpoint_dir: str | Path, device: str | torch.device | None = None, expected=None):
    """(model, tokenizer, provenance) from an HF checkpoint dir (results/checkpoints/{model}/final).

    Weights load from safetensors only (a pickled checkpoint is refused), strictly
    (hades.models.load_pretrained: a missing, extra or misshapen tensor is refused). `expected`
    (a ModelConfig) must match the checkpoint's architecture.
    """
    from hades.models import load_pretrained

    ckpt = Path(checkpoint_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_pretrained(ckpt).to(device)
    if expected is not None:
        check_model_matches(model, expected, f"checkpoint {ckpt}")
    tokenizer = load_tokenizer_for(ckpt)
    if len(tokenizer) != model.config.vocab_size:
        raise EvalTaskError(
            f"checkpoint {ckpt}: tokenizer has {len(tokenizer)} tokens but the model was trained with "
            f"vocab_size {model.config.vocab_size}"
        )
    return model, tokenizer, checkpoint_provenance(ckpt)


def checkpoint_provenance(ckpt: Path) -> dict[str, Any]:
    """What identifies the evaluated weights: path, checksum, the model config, the small JSON
    records the trainer left next to them, and the model's MLflow run id."""
    prov: dict[str, Any] = {"path": str(ckpt), "weights_sha256": sha256_file(ckpt / "model.safetensors")}
    records = {}
    for p in sorted(ckpt.glob("*.json")):
        if p.name.startswith("tokenizer") or p.name == "special_tokens_map.json" or p.stat().st_size > 65536:
            continue
        try:
            records[p.name] = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
    prov["records"] = records
    run_id = ckpt.parent / "mlflow_run_id"
    if run_id.is_file():
        prov["mlflow_run_id"] = run_id.read_text().strip()
    return prov


# --- the rule's unit of work ---------------------------------------------------------------------


def _json_safe(obj: Any) -> Any:
    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(obj, default=handle_non_serializable))


def config_record(cfg, grid_id: str | None) -> dict[str, Any] | None:
    if cfg is None:
        return None
    rec = {"source": cfg.source, "hash": cfg.hash(), "config": cfg.raw}
    if grid_id is not None:
        rec["experiment"] = dataclasses.asdict(cfg.experiment(grid_id))
    return rec


def log_metrics_to_mlflow(cfg, grid_id: str, metrics: Mapping[str, float], prefix: str,
                          artifact: str | Path | None = None) -> None:
    """Mirror metrics (and the results file) into the model's MLflow run; hades.tracking owns
    the run bookkeeping (the run id stored next to the model's checkpoints)."""
    from hades import tracking

    tracking.log_eval_metrics(cfg, grid_id, dict(metrics), prefix)
    if artifact is not None:
        tracking.log_artifact(cfg, grid_id, artifact, prefix)


def evaluate_checkpoint(
    checkpoint_dir: str | Path,
    tasks: Sequence[str],
    local_data: Mapping[str, str] | None,
    batch_size: int,
    max_length: int,
    limit: int | float | None,
    out_json: str | Path,
    cfg=None,
    grid_id: str | None = None,
    *,
    offline: bool | None = None,
    device: str | None = None,
    precision: str = "auto",
    bootstrap_iters: int = 0,
) -> dict[str, Any]:
    """Evaluate one checkpoint and write `out_json` (results/eval/{model}/lm_eval.json).

    offline: None = cfg.eval.offline (else the HF_DATASETS_OFFLINE/HF_HUB_OFFLINE environment).
    With cfg and grid_id, the metrics also go into that model's MLflow run (prefix "eval").
    """
    if offline is None:
        offline = cfg.eval.offline if cfg is not None else any(
            os.environ.get(v, "0") not in ("", "0") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
        )
    if offline:  # before `datasets` loads (it reads these once): no network round trips at all
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if local_data is None and cfg is not None:
        local_data = default_local_data(cfg)
    check_tasks(tasks, local_data or {}, offline=offline)  # before the (slow) model load
    expected = cfg.experiment(grid_id).model if cfg is not None and grid_id is not None else None
    model, tokenizer, provenance = load_checkpoint(checkpoint_dir, device, expected)
    t0 = time.time()
    results, plan = run_lm_eval(
        model, tokenizer, tasks, local_data, batch_size=batch_size, max_length=max_length, limit=limit,
        offline=offline, bootstrap_iters=bootstrap_iters, precision=precision,
        seed=cfg.seed if cfg is not None else 1234,
    )
    elapsed = time.time() - t0
    metrics = extract_metrics(results)
    non_finite = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if non_finite:  # kept (a diverged model's perplexity is a result) but flagged here and in the tables
        log.warning("checkpoint %s: non-finite metrics %s (a diverged or damaged model?)", checkpoint_dir, non_finite)
    import lm_eval
    import transformers

    commit = git_info(Path(__file__).parent)["commit"]  # the evaluating code's revision
    record = {
        "model": grid_id or Path(checkpoint_dir).parent.name,
        "metrics": metrics,
        "non_finite_metrics": non_finite,
        "settings": {
            "tasks": list(tasks),
            "max_length": max_length,
            "batch_size": batch_size,
            "limit": limit,
            "num_fewshot": 0,
            "offline": offline,
            "device": str(model.device),
            "precision": "bf16-autocast" if (precision == "bf16" or (precision == "auto" and model.device.type == "cuda")) else "fp32",
            "bootstrap_iters": bootstrap_iters,
        },
        "data": plan.sources,
        "config": config_record(cfg, grid_id),
        "checkpoint": provenance,
        "lm_eval": _json_safe({k: results.get(k) for k in ("results", "versions", "n-shot", "n-samples", "higher_is_better", "configs")}),
        "versions": {"lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
                     "torch": torch.__version__, "transformers": transformers.__version__},
        "git_sha": None if commit == UNKNOWN else commit,
        "elapsed_s": round(elapsed, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(out_json, record, sort_keys=False, default=str)
    if cfg is not None and grid_id is not None:
        log_metrics_to_mlflow(cfg, grid_id, metrics, prefix="eval", artifact=out_json)
    return record

"""Did every model learn, and how did HADES's auxiliary losses behave? (rule `study_table`)

Two baselines make a validation loss readable:
- the unigram entropy H₁ of the training tokens, -Σ p(w) ln p(w) in nats per token: what a
  model that ignores context achieves on its own training distribution;
- the held-out cross-entropy of that unigram model (add-one smoothed over the vocabulary),
  which is the loss a context-free model gets on the validation documents.
A model whose validation loss is not clearly below both learned nothing beyond word frequency.

Per model, from the files the pipeline wrote (never MLflow):
- validation loss = ln(token perplexity) of the `toy_ppl` task (lm-eval's rolling log-likelihood
  over the corpus's held-out documents; hades/eval/tasks/toy/toy_ppl.yaml), when evaluated, and
  the best and last values of the trainer's validation curve (train.eval_every), which show
  where a model started to overfit;
- training dynamics from metrics.jsonl (every step): the share of steps whose gradient norm
  exceeded train.grad_clip (clipping rescaled the whole gradient, LM part included), and the
  weighted balance loss λ1·L_balance (its median, maximum and the step of the maximum), next to
  the cross-entropy of that step. A spike of λ1·L_balance far above the cross-entropy, with
  clipping active, means the LM gradient was scaled down by the balance term's norm.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hades.data.shards import TokenDataset

STUDY_HEADERS = {
    "model": "model",
    "params": "params",
    "tokens": "train tokens",
    "final_ce": "train CE (last window)",
    "val_loss": "val loss (nats/token)",
    "val_minus_unigram": "val loss − H₁",
    "best_val_loss": "best val loss in training",
    "best_val_step": "at step",
    "final_val_loss": "last val loss in training",
    "clip_frac": "steps clipped",
    "balance_median": "λ1·L_bal median",
    "balance_max": "λ1·L_bal max",
    "balance_max_step": "spike at step",
    "ce_at_balance_max": "CE at that step",
}


def unigram_baselines(manifest: str | Path) -> dict[str, float]:
    """H₁ of the train split and the held-out cross-entropy of its add-one unigram model."""
    train = TokenDataset(manifest, "train").token_counts()
    p = train[train > 0] / train.sum()
    h1 = float(-(p * np.log(p)).sum())
    val = TokenDataset(manifest, "val").token_counts()
    q = (train + 1) / (train.sum() + train.size)  # add-one: every id has some probability
    val_ce = float(-(val * np.log(q)).sum() / val.sum())
    return {
        "unigram_entropy": h1,
        "unigram_val_ce": val_ce,
        "train_tokens": int(train.sum()),
        "val_tokens": int(val.sum()),
        "vocab_size": int(train.size),
        "distinct_train_tokens": int((train > 0).sum()),
    }


def _metrics(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def training_dynamics(metrics: Sequence[Mapping[str, Any]], grad_clip: float) -> dict[str, Any]:
    """Clipping and balance-loss statistics over every logged step."""
    out: dict[str, Any] = {"steps": len(metrics)}
    norms = [r["grad_norm"] for r in metrics if "grad_norm" in r]
    if norms and grad_clip > 0:
        out["clip_frac"] = sum(g > grad_clip for g in norms) / len(norms)
        out["grad_norm_median"] = statistics.median(norms)
    bal = [(r["aux/balance"], r["step"], r.get("ce")) for r in metrics if "aux/balance" in r]
    if bal:
        values = [b for b, _, _ in bal]
        top = max(bal, key=lambda b: b[0])
        out |= {
            "balance_median": statistics.median(values),
            "balance_max": top[0],
            "balance_max_step": top[1],
            "ce_at_balance_max": top[2],
            "balance_over_ce_frac": sum(b > (ce or math.inf) for b, _, ce in bal) / len(bal),
        }
    div = [r["aux/diversity"] for r in metrics if "aux/diversity" in r]
    if div:
        out["diversity_median"] = statistics.median(div)
    return out


def val_loss(eval_json: str | Path) -> float | None:
    """ln(token perplexity) of toy_ppl in an lm_eval.json, or None when the task was not run."""
    with open(eval_json, encoding="utf-8") as f:
        metrics = json.load(f).get("metrics", {})
    ppl = metrics.get("toy_ppl/token_perplexity")
    return math.log(ppl) if isinstance(ppl, (int, float)) and ppl > 0 else None


def study(
    manifest: str | Path,
    summaries: Mapping[str, str | Path],
    metrics: Mapping[str, str | Path],
    eval_jsons: Mapping[str, str | Path],
    grad_clips: Mapping[str, float],
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """{model: file} maps and each model's train.grad_clip -> {"baselines": ..., "models":
    {model: row}} (the study.json)."""
    base = unigram_baselines(manifest)
    rows = {}
    for model, summary_path in summaries.items():
        with open(summary_path, encoding="utf-8") as f:
            s = json.load(f)
        grad_clip = float(grad_clips[model])
        row = {
            "label": (labels or {}).get(model, model),
            "arch": s.get("arch"),
            "params": s.get("n_params"),
            "tokens": s.get("tokens"),
            "final_ce": s.get("final_ce"),
            # train.eval_every: the trainer's own validation curve on fixed windows
            "best_val_loss": s.get("best_val_loss"),
            "best_val_step": s.get("best_val_step"),
            "final_val_loss": s.get("final_val_loss"),
            "grad_clip": grad_clip,
            **training_dynamics(_metrics(metrics[model]), grad_clip),
        }
        vl = val_loss(eval_jsons[model]) if model in eval_jsons else None
        row["val_loss"] = vl
        row["val_minus_unigram"] = None if vl is None else vl - base["unigram_entropy"]
        rows[model] = row
    return {"baselines": base, "models": rows}


def study_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """study() -> table rows in STUDY_HEADERS order (the label as the model column)."""
    def fmt(v: Any) -> Any:
        return round(v, 4) if isinstance(v, float) else v

    return [
        {"model": r["label"], **{k: fmt(r.get(k)) for k in STUDY_HEADERS if k != "model"}}
        for r in result["models"].values()
    ]

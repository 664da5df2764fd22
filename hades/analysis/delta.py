"""Effect of the spectral bias on Δ: Figure 4 of the paper (Sec. 4, "Effect of Spectral Bias"; App. E).

For every expert slot of every layer and every token, HADES computes

    Δ_HADES = softplus(dt_raw + dt_bias + γ·b_t)      (Eq. 6)
    Δ       = softplus(dt_raw + dt_bias)              (the same without the spectral bias)

The mixer exposes both through `hook_delta` and `hook_delta_no_bias`, (batch, seqlen, H), in one
forward pass, so the difference is taken on exactly the same activations. Shared slots have no
bias (their difference must be 0, which we check and report); the histogram pools the Q expert
slots of all layers over the tokens of a few sampled documents (paper: 25 Pile documents,
~38,000 tokens), with log-scale counts, and reports the fraction of positive differences
(paper: "predominantly positive").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hades.config import Config

from . import style
from .common import capture, hades_mixers, slot_layout

N_BINS = 60

log = logging.getLogger(__name__)


@torch.no_grad()
def delta_differences(model: nn.Module, docs: Sequence[Sequence[int]]) -> tuple[np.ndarray, float]:
    """Δ_HADES − Δ for the expert slots: (n_layer, n_tokens, Q) over all documents, and the
    largest |Δ_HADES − Δ| seen on a shared slot (0 for a correct model)."""
    mixers = hades_mixers(model)
    Q, _ = slot_layout(model)
    hooks = {}
    for i, m in enumerate(mixers):
        hooks[f"{i}.bias"] = m.hook_delta
        hooks[f"{i}.no_bias"] = m.hook_delta_no_bias
    per_doc, shared_max = [], 0.0
    device = next(model.parameters()).device
    for ids in docs:
        x = torch.tensor([list(ids)], dtype=torch.long, device=device)
        with capture(hooks) as rec:
            model(x)
        layers = []
        for i in range(len(mixers)):
            got = (len(rec[f"{i}.bias"]), len(rec[f"{i}.no_bias"]))
            assert got == (1, 1), (
                f"layer {i}: hook_delta / hook_delta_no_bias fired {got} times, expected once each"
            )
            d = (rec[f"{i}.bias"][0] - rec[f"{i}.no_bias"][0]).double()[0]  # (T, H)
            if d.shape[1] > Q:
                shared_max = max(shared_max, float(d[:, Q:].abs().max()))
            layers.append(d[:, :Q].numpy())
        per_doc.append(np.stack(layers))  # (n_layer, T, Q)
    return np.concatenate(per_doc, axis=1), shared_max


def histogram(values: np.ndarray, bins: int = N_BINS) -> dict[str, list[float]]:
    """Counts over about `bins` equal bins spanning the values, with 0 on a bin edge so that
    every bin holds values of one sign only."""
    lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    width = (hi - lo) / bins or 1e-12
    n_neg, n_pos = int(np.ceil(-lo / width)), int(np.ceil(hi / width))
    edges = width * np.arange(-n_neg, n_pos + 1)
    counts, edges = np.histogram(values, bins=edges)
    return {"edges": edges.tolist(), "counts": counts.astype(int).tolist()}


def summarize(diffs: np.ndarray, shared_max_abs: float = 0.0) -> dict[str, Any]:
    """Statistics of Δ_HADES − Δ. diffs: (n_layer, n_tokens, Q) -> a JSON-able dict."""
    v = diffs.reshape(-1)
    if v.size == 0:
        raise ValueError(
            "no expert-slot Δ values (Q = 0?): the spectral bias only acts on expert slots"
        )
    q = [1, 5, 25, 50, 75, 95, 99]
    return {
        "n_tokens": int(diffs.shape[1]),
        "n_values": int(v.size),
        "fraction_positive": float((v > 0).mean()),
        "fraction_negative": float((v < 0).mean()),
        "fraction_zero": float((v == 0).mean()),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "quantiles": {f"p{k}": float(x) for k, x in zip(q, np.percentile(v, q))},
        "per_layer": [
            {"layer": i, "fraction_positive": float((d > 0).mean()), "mean": float(d.mean())}
            for i, d in enumerate(diffs)
        ],
        "shared_max_abs_diff": float(shared_max_abs),
        "histogram": histogram(v),
    }


def analyze(model: nn.Module, docs: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Figure 4's data for one HADES model. A model without expert slots (Q = 0, the
    shared-only ablation) has no spectral bias: the result says so, with no statistics."""
    Q, S = slot_layout(model)
    head = {
        "pooled_over": f"expert slots (Q={Q}) of all {len(model.layers)} layers, every token",
        "n_docs": len(docs),
    }
    if Q == 0:
        n_tokens = int(sum(len(d) for d in docs))
        return {**head, "n_tokens": n_tokens, "n_values": 0, "fraction_positive": None}
    diffs, shared_max = delta_differences(model, docs)
    return {**head, **summarize(diffs, shared_max)}


def summary_line(result: Mapping[str, Any]) -> str:
    if not result["n_values"]:
        return "no expert slots (Q = 0): the model has no spectral bias"
    return (
        f"Δ_HADES − Δ over {result['n_tokens']} tokens ({result['n_values']} values): "
        f"{100 * result['fraction_positive']:.1f}% positive, {100 * result['fraction_negative']:.1f}% negative, "
        f"median {result['quantiles']['p50']:.3g}"
    )


def plot(result: Mapping[str, Any], title: str | None = None):
    """Figure 4 from an `analyze` result: log-scale histogram, positive bins in the expert colour,
    negative bins in the shared colour, a line at 0."""
    with style.style():
        fig, ax = style.new_figure(5.2, 3.4)
        ax.set_title(title or r"Histogram of $\Delta_{t,\mathrm{HADES}} - \Delta_t$")
        ax.set_xlabel(r"$\Delta_{t,\mathrm{HADES}} - \Delta_t$")
        if not result["n_values"]:
            ax.text(
                0.5, 0.5, summary_line(result), ha="center", va="center", transform=ax.transAxes
            )
            return fig
        edges = np.asarray(result["histogram"]["edges"])
        counts = np.asarray(result["histogram"]["counts"])
        centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        positive, negative = style.GROUP_COLORS["expert"], style.GROUP_COLORS["shared"]
        colors = [positive if c > 0 else negative for c in centers]
        ax.bar(centers, counts, width=widths, color=colors, log=True, linewidth=0)
        ax.axvline(0.0, color="#222222", linewidth=0.9)
        ax.set_ylabel("count (log scale)")
        style.note(
            ax,
            f"{100 * result['fraction_positive']:.1f}% positive\n"
            f"{result['n_tokens']:,} tokens, {result['n_docs']} docs\n{result['n_values']:,} values",
        )
    return fig


def run(
    ckpt_dir: str | Path,
    docs: Sequence[Sequence[int]],
    out_json: str | Path,
    fig_paths: Sequence[str | Path],
    model_id: str = "hades",
    label: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint, analyse it, write the JSON and the figure files."""
    from hades.io import write_json

    from .common import load_checkpoint

    model = load_checkpoint(ckpt_dir)
    result = {
        "model": model_id,
        "checkpoint": str(ckpt_dir),
        **analyze(model, docs),
        **(extra or {}),
    }
    result["summary"] = summary_line(result)
    log.info("%s: %s", model_id, result["summary"])
    write_json(out_json, result)
    style.save_figure(
        plot(result, title=f"{label or model_id}: " + r"$\Delta_{t,\mathrm{HADES}} - \Delta_t$"),
        *fig_paths,
    )
    return result


def from_config(
    cfg: Config,
    model_id: str,
    ckpt_dir: str | Path,
    val_jsonl: str | Path,
    out_json: str | Path,
    fig_paths: Sequence[str | Path],
) -> dict[str, Any]:
    """Rule `delta_hist`: the documents from the config's `analysis:` section."""
    from .common import load_documents

    docs, source = load_documents(cfg.analysis, ckpt_dir, val_jsonl, cfg.seed)
    extra = {"documents": source, "analysis_config": dict(cfg.raw_section("analysis")), "config_hash": cfg.hash()}
    return run(
        ckpt_dir,
        docs,
        out_json,
        fig_paths,
        model_id=model_id,
        label=cfg.experiment(model_id).label,
        extra=extra,
    )

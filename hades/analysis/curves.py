"""Training curves and the parameter / throughput table, from the files the `train` rule wrote.

    results/train/{model}/metrics.jsonl   one JSON object per optimizer step: step, tokens,
                                          loss (CE + weighted aux), ce, aux/<name>, lr,
                                          grad_norm, tokens_per_s, time_s (hades.train.loop)
    results/train/{model}/summary.json    n_params, tokens_per_s, train_time_s, final_ce, ...

Figures: the training loss of every grid id against tokens on one axis (the paper compares
models at equal tokens), and the HADES auxiliary losses (L_balance, L_diversity; Eq. 7) of the
models that log them. Table: parameters (and their share of the reference model's, the paper's
"58.9% of Mamba2"), training throughput, tokens seen and final loss.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import style

# The first key present is plotted as "the" training loss: cross-entropy ("ce", hades.train)
# rather than the total (CE + weighted aux), so that HADES and the baselines compare fairly.
LOSS_KEYS = ("ce", "loss")
AUX_MARKERS = ("balance", "diversity")
PARAM_KEYS = ("n_params", "params")
THROUGHPUT_KEYS = ("tokens_per_s",)
FINAL_LOSS_KEYS = ("final_ce", "final_loss")


@dataclass
class Run:
    """The training record of one grid id."""

    grid_id: str
    metrics: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def read_run(train_dir: str | Path, grid_id: str | None = None) -> Run:
    """metrics.jsonl (+ summary.json if present) of `results/train/{model}/`."""
    d = Path(train_dir)
    metrics = [
        json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    summary_path = d / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return Run(grid_id or d.name, metrics, summary)


def lookup(obj: Mapping[str, Any], keys: Sequence[str]) -> Any:
    """The first of `keys` present (not None) in `obj`, else None."""
    return next((obj[k] for k in keys if obj.get(k) is not None), None)


def series(
    metrics: Sequence[Mapping[str, Any]], key: str, x: str = "tokens"
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the rows that have both keys, sorted by x."""
    pts = sorted((r[x], r[key]) for r in metrics if r.get(x) is not None and r.get(key) is not None)
    arr = np.asarray(pts, dtype=float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def loss_key(metrics: Sequence[Mapping[str, Any]]) -> str | None:
    keys = set().union(*(r.keys() for r in metrics)) if metrics else set()
    return next((k for k in LOSS_KEYS if k in keys), None)


def aux_keys(metrics: Sequence[Mapping[str, Any]]) -> list[str]:
    """Logged auxiliary-loss keys (names containing 'balance' or 'diversity'), sorted."""
    keys = set().union(*(r.keys() for r in metrics)) if metrics else set()
    return sorted(k for k in keys if any(m in k for m in AUX_MARKERS))


def plot_loss(runs: Mapping[str, Run], labels: Mapping[str, str] | None = None):
    """Training loss vs tokens, one line per grid id, in the house colours; with a second panel
    of the validation loss (train.eval_every: the same fixed windows every time) when any run
    logged one, so overfitting shows as the gap between the panels."""
    with_val = any("val_loss" in r for run in runs.values() for r in run.metrics)
    with style.style():
        fig, axes = style.new_figure(12.0 if with_val else 8.0, 4.0, ncols=2 if with_val else 1, squeeze=False)
        ax = axes[0][0]
        key = None
        for gid in style.order_grid(runs):
            key = loss_key(runs[gid].metrics)
            if key is None:
                continue
            x, y = series(runs[gid].metrics, key)
            ax.plot(x, y, gid=gid, label=style.grid_label(gid, labels), **style.grid_style(gid))
            if with_val:
                xv, yv = series(runs[gid].metrics, "val_loss")
                axes[0][1].plot(xv, yv, gid=gid, marker=".", **style.grid_style(gid))
        ax.set_xlabel("training tokens")
        ax.set_ylabel("training loss" + (" (cross-entropy)" if key and key != "loss" else ""))
        ax.set_title("Training loss")
        if with_val:
            axes[0][1].set_xlabel("training tokens")
            axes[0][1].set_ylabel("validation cross-entropy")
            axes[0][1].set_title("Validation loss (fixed windows of the val split)")
        for a in axes[0]:
            a.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
        _legend_outside(fig, list(axes[0]))
    return fig


def _legend_outside(fig, axes) -> None:
    """One legend for the figure, right of the axes, so it never hides a curve; each label
    once (a model drawn in several panels)."""
    lines: dict[str, Any] = {}  # grid id -> its first line (lines carry their grid id as gid)
    for ax in axes:
        for line in ax.get_lines():
            lines.setdefault(line.get_gid(), line)
    ordered = [lines[g] for g in style.order_grid(lines)]
    if ordered:
        fig.legend(
            ordered, [ln.get_label() for ln in ordered], loc="outside right upper", frameon=False
        )


def plot_aux(runs: Mapping[str, Run], labels: Mapping[str, str] | None = None):
    """The HADES auxiliary losses (as logged, i.e. weighted by λ) vs tokens, one panel per loss."""
    with_aux = {g: r for g, r in runs.items() if aux_keys(r.metrics)}
    kinds = [
        m
        for m in AUX_MARKERS
        if any(m in k for r in with_aux.values() for k in aux_keys(r.metrics))
    ]
    with style.style():
        fig, axes = style.new_figure(
            3.6 * max(1, len(kinds)) + 1.8, 3.4, ncols=max(1, len(kinds)), squeeze=False
        )
        if not kinds:
            axes[0][0].text(
                0.5,
                0.5,
                "no auxiliary losses logged",
                ha="center",
                va="center",
                transform=axes[0][0].transAxes,
            )
        for ax, kind in zip(axes[0], kinds):
            for gid in style.order_grid(with_aux):
                for key in aux_keys(with_aux[gid].metrics):
                    if kind not in key:
                        continue
                    x, y = series(with_aux[gid].metrics, key)
                    if not (y > 0).any():  # λ = 0 (an ablation) logs zeros: nothing to draw
                        continue
                    ax.plot(
                        x, y, gid=gid, label=style.grid_label(gid, labels), **style.grid_style(gid)
                    )
            ax.set_yscale("log")
            ax.set_xlabel("training tokens")
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
            ax.set_title(
                r"$\lambda_1 \mathcal{L}_{balance}$"
                if kind == "balance"
                else r"$\lambda_2 \mathcal{L}_{diversity}$"
            )
        _legend_outside(fig, axes.flat)
        fig.suptitle("HADES auxiliary losses (summed over layers, weighted)")
    return fig


def efficiency_rows(
    runs: Mapping[str, Run],
    labels: Mapping[str, str] | None = None,
    reference: str | None = "mamba2",
) -> list[dict[str, Any]]:
    """One row per grid id: params, share of the reference's params, throughput, tokens, loss."""
    ref_params = lookup(runs[reference].summary, PARAM_KEYS) if reference in runs else None
    rows = []
    for gid in style.order_grid(runs):
        r = runs[gid]
        params = lookup(r.summary, PARAM_KEYS)
        tps = lookup(r.summary, THROUGHPUT_KEYS)
        if tps is None:  # fall back to the mean of the logged per-step throughput
            logged = [m["tokens_per_s"] for m in r.metrics if m.get("tokens_per_s") is not None]
            tps = float(np.mean(logged)) if logged else None
        key = loss_key(r.metrics)
        last = r.metrics[-1] if r.metrics else {}
        final = lookup(r.summary, FINAL_LOSS_KEYS)  # the trainer's mean over its last steps
        if final is None and key:
            final = series(r.metrics, key)[1][-1]
        time_s = lookup(r.summary, ("train_time_s",))
        rows.append(
            {
                "model": gid,
                "label": style.grid_label(gid, labels),
                "params": params,
                "params_vs_reference_pct": round(100.0 * params / ref_params, 1)
                if params and ref_params
                else None,
                "tokens_per_s": round(float(tps)) if tps is not None else None,
                "train_tokens": last.get("tokens"),
                "steps": last.get("step"),
                "train_time_s": round(float(time_s), 1) if time_s is not None else None,
                "final_loss": round(float(final), 4) if final is not None else None,
            }
        )
    return rows


EFFICIENCY_HEADERS = {
    "model": "grid id",
    "label": "model",
    "params": "params",
    "params_vs_reference_pct": "% of ref. params",
    "tokens_per_s": "train tokens/s",
    "train_tokens": "train tokens",
    "steps": "steps",
    "train_time_s": "train time (s)",
    "final_loss": "final train CE",
}

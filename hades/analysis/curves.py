"""Training curves and the parameter / throughput table, from the files the `train` rule wrote.

    results/train/{model}/metrics.jsonl   one JSON object per logged step: step, tokens, loss,
                                          the auxiliary losses, lr, grad_norm, tokens_per_s
    results/train/{model}/summary.json    params, throughput, ...

Figures: the training loss of every grid id against tokens on one axis (the paper compares
models at equal tokens), and the HADES auxiliary losses (L_balance, L_diversity; Eq. 7) of the
models that log them. Table: parameters (and their share of the reference model's, the paper's
"58.9% of Mamba2"), training throughput, tokens seen and final loss.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import style

# The first key present is plotted as "the" training loss; cross-entropy is preferred to the
# total (CE + weighted aux) when a trainer logs both.
LOSS_KEYS = ("ce_loss", "loss_ce", "lm_loss", "loss")
AUX_MARKERS = ("balance", "diversity")
PARAM_KEYS = ("params", "n_params", "num_params", "parameters")
THROUGHPUT_KEYS = ("tokens_per_s", "throughput_tokens_per_s", "train_tokens_per_s", "throughput")


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
    """The first of `keys` found in `obj` or in one of its sub-mappings (None if absent)."""
    for k in keys:
        if k in obj and not isinstance(obj[k], Mapping):
            return obj[k]
    for v in obj.values():
        if isinstance(v, Mapping):
            found = lookup(v, keys)
            if found is not None:
                return found
    return None


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
    """Training loss vs tokens, one line per grid id, in the house colours."""
    with style.style():
        fig, ax = style.new_figure(6.4, 4.0)
        key = None
        for gid in style.order_grid(runs):
            key = loss_key(runs[gid].metrics)
            if key is None:
                continue
            x, y = series(runs[gid].metrics, key)
            ax.plot(x, y, label=style.grid_label(gid, labels), **style.grid_style(gid))
        ax.set_xlabel("training tokens")
        ax.set_ylabel("training loss" + (" (cross-entropy)" if key and key != "loss" else ""))
        ax.set_title("Training loss")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
        if ax.lines:
            ax.legend(ncols=2, frameon=False)
    return fig


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
            3.6 * max(1, len(kinds)), 3.4, ncols=max(1, len(kinds)), squeeze=False
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
                    ax.plot(
                        x, np.abs(y), label=style.grid_label(gid, labels), **style.grid_style(gid)
                    )
            ax.set_yscale("log")
            ax.set_xlabel("training tokens")
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
            ax.set_title(
                r"$\lambda_1 \mathcal{L}_{balance}$"
                if kind == "balance"
                else r"$\lambda_2 \mathcal{L}_{diversity}$"
            )
            if ax.lines:
                ax.legend(frameon=False)
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
                "final_loss": round(float(series(r.metrics, key)[1][-1]), 4) if key else None,
            }
        )
    return rows


TABLE_HEADERS = {
    "model": "grid id",
    "label": "model",
    "params": "params",
    "params_vs_reference_pct": "% of ref. params",
    "tokens_per_s": "train tokens/s",
    "train_tokens": "train tokens",
    "steps": "steps",
    "final_loss": "final loss",
}


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def write_table(
    rows: Sequence[Mapping[str, Any]], stem: str | Path, title: str = "Parameters and throughput"
) -> list[Path]:
    """Write rows as `stem`.csv (raw values), .md and .html (formatted, for docs and the report)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0]) if rows else list(TABLE_HEADERS)
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    heads = [TABLE_HEADERS.get(c, c) for c in cols]
    md = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    stem.with_suffix(".html").write_text(
        html_table(heads, [[_fmt(r.get(c)) for c in cols] for r in rows], title)
    )
    return [stem.with_suffix(s) for s in (".csv", ".md", ".html")]


HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;font-size:14px}"
    "th,td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}"
    "th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}"
    "th{background:#f4f4f4}caption{font-weight:600;text-align:left;padding-bottom:.5em}"
)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str) -> str:
    """A standalone HTML page holding one table (how the report shows tables)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{HTML_STYLE}</style></head><body><table><caption>{html.escape(title)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n"
    )


def csv_to_html(csv_path: str | Path, html_path: str | Path, title: str | None = None) -> None:
    """Render a results CSV table (e.g. results/tables/table1.csv) as an HTML page for the report."""
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    headers, body = (rows[0], rows[1:]) if rows else ([], [])
    Path(html_path).parent.mkdir(parents=True, exist_ok=True)
    Path(html_path).write_text(html_table(headers, body, title or Path(csv_path).stem))

"""Passkey retrieval heatmaps: Figure 3 of the paper (HADES and Mamba2 side by side).

Reads the CSVs of the `passkey` rule, results/passkey/{model}/passkey.csv with columns
length, depth, score, trials (score = correct retrievals out of `trials`), and draws one
depth × context-length heatmap per model. Colour is the share of correct retrievals (0 … 1, the
same scale in every panel); each cell is labelled with the count, as in the paper ("count out of 10").
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import style


@dataclass
class PasskeyGrid:
    """Scores of one model. scores, trials: (n_depths, n_lengths), rows = depths ascending."""

    lengths: list[int]
    depths: list[float]
    scores: np.ndarray
    trials: np.ndarray

    @property
    def accuracy(self) -> np.ndarray:
        return np.where(self.trials > 0, self.scores / np.maximum(self.trials, 1), np.nan)

    @property
    def mean_accuracy(self) -> float:
        return float(self.scores.sum() / max(self.trials.sum(), 1))


def read_passkey(path: str | Path) -> PasskeyGrid:
    """Read one passkey CSV; repeated (length, depth) rows are summed."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"length", "depth", "score", "trials"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {sorted(missing)}; want length, depth, score, trials"
        )
    lengths = sorted({int(r["length"]) for r in rows})
    depths = sorted({round(float(r["depth"]), 6) for r in rows})
    scores = np.zeros((len(depths), len(lengths)))
    trials = np.zeros_like(scores)
    for r in rows:
        i, j = depths.index(round(float(r["depth"]), 6)), lengths.index(int(r["length"]))
        scores[i, j] += float(r["score"])
        trials[i, j] += float(r["trials"])
    return PasskeyGrid(lengths, depths, scores, trials)


def _length_label(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def plot(grids: Mapping[str, PasskeyGrid], labels: Mapping[str, str] | None = None):
    """One heatmap per model, side by side, one shared colour bar."""
    ids = list(grids)
    width = max(3.0, 0.42 * max(len(g.lengths) for g in grids.values()) + 1.4)
    with style.style():
        fig, axes = style.new_figure(width * len(ids) + 0.8, 3.6, ncols=len(ids), squeeze=False)
        im = None
        for ax, gid in zip(axes[0], ids):
            g = grids[gid]
            im = ax.imshow(
                g.accuracy,
                cmap=style.HEATMAP_CMAP,
                vmin=0.0,
                vmax=1.0,
                aspect="auto",
                origin="upper",
            )
            if g.scores.size <= 400:  # annotate counts while the cells are large enough to read
                size = 9 if g.scores.size <= 40 else 7
                for (i, j), s in np.ndenumerate(g.scores):
                    acc = g.accuracy[i, j]
                    dark = not np.isnan(acc) and (acc < 0.2 or acc > 0.85)  # the ends of RdYlGn
                    ax.text(
                        j,
                        i,
                        f"{s:g}",
                        ha="center",
                        va="center",
                        fontsize=size,
                        color="white" if dark else "#111111",
                    )
            ax.set_xticks(
                range(len(g.lengths)),
                [_length_label(n) for n in g.lengths],
                rotation=45 if len(g.lengths) > 8 else 0,
            )
            ax.set_yticks(range(len(g.depths)), [f"{100 * d:.0f}%" for d in g.depths])
            ax.set_xlabel("context length (tokens)")
            ax.grid(False)
            ax.set_title(
                f"{style.grid_label(gid, labels)}  (mean {100 * g.mean_accuracy:.0f}%)",
                color=style.grid_color(gid),
            )
        axes[0][0].set_ylabel("passkey depth")
        cbar = fig.colorbar(im, ax=axes[0].tolist(), shrink=0.9)
        cbar.set_label("correct retrievals (share of trials)")
        fig.suptitle("Passkey retrieval (cell: correct out of trials)")
    return fig

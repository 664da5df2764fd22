"""One look for every figure of the pipeline: colours, labels, fonts, and how figures are saved.

Every figure function in `hades.analysis` (and the passkey heatmap) draws through this module so
that a grid id has the same colour in the training curves, the passkey heatmaps and any later
plot, and every figure is written as a PNG (for the HTML report and the docs) and a PDF (for
papers) side by side.

Figures are built with the object-oriented API (`new_figure`) rather than `pyplot`, so nothing
depends on a GUI backend or on global pyplot state.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

# Baselines take the Okabe-Ito colour-blind-safe palette; the HADES family shares one hue
# (vermillion) so that the paper's model and its ablations read as one group, the ablations
# told apart by shade and dashes.
GRID_COLORS: dict[str, str] = {
    "linear_attn": "#56B4E9",  # sky blue
    "retnet": "#009E73",  # bluish green
    "deltanet": "#CC79A7",  # reddish purple
    "mamba": "#E69F00",  # orange
    "mamba2": "#0072B2",  # blue
    "smamba": "#7F7F7F",  # grey
    "hades": "#D55E00",  # vermillion
    "hades_no_balance": "#8C2D04",
    "hades_no_diversity": "#F16913",
    "hades_shared_only": "#A50F15",
    "hades_expert_only": "#FDAE6B",
}
# Fallback for grid ids this table does not know (a new ablation): a stable pick by name.
_FALLBACK = ["#1B9E77", "#7570B3", "#E7298A", "#66A61E", "#E6AB02", "#A6761D", "#666666", "#1F78B4"]

# The three spectrum groups of Figure 2.
GROUP_COLORS: dict[str, str] = {
    "shared": "#0072B2",
    "expert": "#D55E00",
    "expert_no_bias": "#6A6A6A",
}
GROUP_TITLES: dict[str, str] = {
    "shared": "(a) shared filters",
    "expert": "(b) expert filters, with spectral bias",
    "expert_no_bias": "(c) expert filters, bias removed",
}

# Sequential map for score heatmaps (passkey): low = red, high = green, as in the passkey plots
# of the long-context literature; it stays readable in grey scale.
HEATMAP_CMAP = "RdYlGn"

RC: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.6,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05,
    "pdf.fonttype": 42,  # embed TrueType, so the text in PDFs stays editable and searchable
}
PNG_DPI = 150


def grid_color(grid_id: str) -> str:
    """The colour of a grid id, the same in every figure."""
    if grid_id in GRID_COLORS:
        return GRID_COLORS[grid_id]
    return _FALLBACK[zlib.crc32(grid_id.encode()) % len(_FALLBACK)]


def grid_style(grid_id: str) -> dict[str, Any]:
    """Line keyword arguments of a grid id: colour, plus dashes for HADES ablations."""
    dashed = grid_id.startswith("hades_")
    return {"color": grid_color(grid_id), "linestyle": "--" if dashed else "-"}


def grid_label(grid_id: str, labels: Mapping[str, str] | None = None) -> str:
    """Human label of a grid id (the config's `label`), falling back to the id."""
    return (labels or {}).get(grid_id, grid_id)


def order_grid(grid_ids: Iterable[str]) -> list[str]:
    """Baselines first in the paper's Table 1 order, then HADES and its ablations, then others."""
    known = list(GRID_COLORS)
    ids = list(dict.fromkeys(grid_ids))
    return sorted(ids, key=lambda g: (known.index(g) if g in known else len(known), g))


def new_figure(width: float = 6.4, height: float = 4.0, **subplot_kw) -> tuple[Figure, Any]:
    """A figure in the house style and its axes (`subplot_kw` goes to `Figure.subplots`).

    The rc parameters apply while artists are created, so call this and draw inside
    `with style():` (the figure functions in this package do).
    """
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(**subplot_kw)
    return fig, axes


def style():
    """Context manager applying the house rc parameters."""
    return matplotlib.rc_context(RC)


def save_figure(fig: Figure, *paths: str | Path) -> list[Path]:
    """Write `fig` to each path (by suffix); a path without suffix gets both .png and .pdf.

    PDFs carry no creation date, so rerunning a rule on the same inputs gives the same bytes.
    """
    targets: list[Path] = []
    for p in paths:
        p = Path(p)
        targets += [p.with_suffix(".png"), p.with_suffix(".pdf")] if p.suffix == "" else [p]
    with style():
        for p in targets:
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.suffix == ".png":
                fig.savefig(p, dpi=PNG_DPI, metadata={"Software": None})
            elif p.suffix == ".pdf":
                fig.savefig(p, metadata={"CreationDate": None, "Creator": None, "Producer": None})
            else:
                raise ValueError(
                    f"save_figure: unsupported suffix {p.suffix!r} in {p} (want .png or .pdf)"
                )
    return targets


def note(ax, text: str) -> None:
    """A small grey note in the top-right corner of an axes (sample sizes, summary numbers)."""
    ax.text(
        0.98,
        0.97,
        text,
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=8,
        color="#444444",
        bbox={
            "boxstyle": "round,pad=0.3",
            "facecolor": "white",
            "edgecolor": "#CCCCCC",
            "alpha": 0.9,
        },
    )

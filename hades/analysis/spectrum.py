"""Filter spectrum analysis: Figure 2 of the paper (Sec. 4, "Filter Spectrum Analysis"; App. E).

Each HADES slot is a filter on the token sequence (a signal on the line graph). We record the
per-slot outputs of one layer after the gated norm, y: (batch, seqlen, H, P), through the
mixer's `hook_slot_outputs`, and estimate each slot's power spectrum along time:

    Welch's method: segments of `nperseg` tokens with 50% overlap, each detrended (segment mean
    removed, so the DC bin carries no level offset) and Hann-windowed (less leakage from a slow
    trend into high frequencies), |rfft|², averaged over segments, documents and the P channels.

Frequencies are in cycles per token (0 = constant, 0.5 = alternating every token). Each slot's
spectrum is normalised to unit power over f > 0, so the groups are compared by *shape*:

    (a) shared slots (the last S), (b) expert slots (the first Q) with the spectral bias γ·b,
    (c) the same expert slots with γ·b removed in the analysed layer only (`spectral_bias = False`),
        so that the layer sees exactly the same input in (b) and (c).

Two scalars summarise a spectrum p(f) over f > 0: the spectral centroid Σ f·p / Σ p, and the
high-frequency energy ratio Σ_{f ≥ 0.25} p / Σ p (the upper half of the band). The paper's claims
become numbers: shared centroid < expert centroid (2a vs 2b), and with-bias centroid > without-bias
centroid (2b vs 2c).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hades.config import Config

from . import style
from .common import capture, hades_mixers, resolve_layer, slot_layout, spectral_bias

HF_CUTOFF = 0.25  # cycles/token: the upper half of the band [0, 0.5] counts as high frequency
MAX_NPERSEG = 128

log = logging.getLogger(__name__)


def welch_power(y: Tensor, nperseg: int) -> tuple[Tensor, int]:
    """Summed per-slot power spectra of one batch of slot outputs.

    y: (batch, seqlen, H, P) with seqlen ≥ nperseg -> (power_sum (H, nperseg//2 + 1), n)
    where power_sum / n is the mean |rfft|² over the n (segment, batch, channel) triples.
    """
    B, T, H, P = y.shape
    assert T >= nperseg >= 2, (
        f"welch_power: need seqlen >= nperseg >= 2, got seqlen={T}, nperseg={nperseg}"
    )
    hop = max(1, nperseg // 2)
    seg = y.double().unfold(1, nperseg, hop)  # (B, n_seg, H, P, nperseg)
    seg = seg - seg.mean(-1, keepdim=True)
    window = torch.hann_window(nperseg, periodic=False, dtype=seg.dtype)
    power = torch.fft.rfft(seg * window, dim=-1).abs().pow(2)  # (B, n_seg, H, P, F)
    n = power.shape[0] * power.shape[1] * power.shape[3]
    return power.sum(dim=(0, 1, 3)), n


def frequencies(nperseg: int) -> np.ndarray:
    """rfft bin frequencies in cycles per token: 0 … 0.5."""
    return np.fft.rfftfreq(nperseg)


def normalise(power: np.ndarray) -> np.ndarray:
    """Each row scaled to unit power over f > 0 (the DC bin is set to 0)."""
    p = np.array(power, dtype=float)
    p[..., 0] = 0.0
    return p / np.maximum(p.sum(-1, keepdims=True), 1e-300)


def centroid(power: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Spectral centroid Σ f·p / Σ p over f > 0, per row (cycles/token)."""
    p = normalise(power)
    return (p * freqs).sum(-1)


def hf_ratio(power: np.ndarray, freqs: np.ndarray, cutoff: float = HF_CUTOFF) -> np.ndarray:
    """Share of the power (f > 0) at frequencies ≥ cutoff, per row."""
    p = normalise(power)
    return p[..., freqs >= cutoff].sum(-1)


@torch.no_grad()
def slot_power(
    model: nn.Module, docs: Sequence[Sequence[int]], layer: int, nperseg: int, bias: bool = True
) -> np.ndarray:
    """Mean per-slot power spectra (H, nperseg//2 + 1) of layer `layer` over `docs`.

    Each document runs alone (batch 1, its full length), so no padding enters the spectra.
    `bias=False` removes the spectral bias in that layer only.
    """
    mixer = hades_mixers(model)[layer]
    total, count = None, 0
    for ids in docs:
        x = torch.tensor([list(ids)], dtype=torch.long, device=next(model.parameters()).device)
        with spectral_bias([mixer], bias), capture({"y": mixer.hook_slot_outputs}) as rec:
            model(x)
        assert len(rec["y"]) == 1, (
            f"hook_slot_outputs of layer {layer} fired {len(rec['y'])} times for one forward"
        )
        p, n = welch_power(rec["y"][0], nperseg)
        total = p if total is None else total + p
        count += n
    return (total / count).numpy()


def group_summary(power: np.ndarray, slots: Sequence[int], freqs: np.ndarray) -> dict[str, Any]:
    """Spectra and scalar summaries of one slot group. power: (H, F) -> a JSON-able dict."""
    p = normalise(power[list(slots)])
    mean = p.mean(0)
    return {
        "slots": list(slots),
        "centroid": float(centroid(mean, freqs)),
        "hf_ratio": float(hf_ratio(mean, freqs)),
        "slot_centroids": centroid(p, freqs).round(6).tolist(),
        "slot_hf_ratios": hf_ratio(p, freqs).round(6).tolist(),
        "magnitude": np.sqrt(p).round(8).tolist(),  # (n_slots, F), unit power per slot
        "mean_magnitude": np.sqrt(mean).round(8).tolist(),
    }


def compare(groups: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The paper's two claims as numbers (None where a group is empty, e.g. S = 0 or Q = 0)."""
    out: dict[str, Any] = {}
    sh, ex, nb = (groups.get(k) for k in ("shared", "expert", "expert_no_bias"))
    if sh and ex:
        out["shared_vs_expert"] = {
            "claim": "shared filters are lower-frequency than expert filters (Fig. 2a vs 2b)",
            "centroid_shared": sh["centroid"],
            "centroid_expert": ex["centroid"],
            "centroid_expert_minus_shared": ex["centroid"] - sh["centroid"],
            "hf_ratio_shared": sh["hf_ratio"],
            "hf_ratio_expert": ex["hf_ratio"],
            "holds": bool(sh["centroid"] < ex["centroid"]),
        }
    else:
        out["shared_vs_expert"] = None
    if ex and nb:
        out["bias_effect"] = {
            "claim": "the spectral bias shifts expert spectra upward (Fig. 2b vs 2c)",
            "centroid_with_bias": ex["centroid"],
            "centroid_without_bias": nb["centroid"],
            "centroid_shift": ex["centroid"] - nb["centroid"],
            "hf_ratio_with_bias": ex["hf_ratio"],
            "hf_ratio_without_bias": nb["hf_ratio"],
            "holds": bool(ex["centroid"] > nb["centroid"]),
        }
    else:
        out["bias_effect"] = None
    return out


def default_nperseg(lengths: Sequence[int]) -> int:
    """Welch segment length: the largest power of two ≤ min(128, median document length).

    Documents shorter than a segment are left out; a long segment resolves low frequencies, a
    short one keeps more documents. A single text (the paper's sample sentence) uses its own
    length when that is below 8.
    """
    median = int(np.median(lengths))
    if median < 8:
        return max(2, median)
    return 1 << int(np.log2(min(MAX_NPERSEG, median)))


def analyze(
    model: nn.Module,
    docs: Sequence[Sequence[int]],
    layer: int | None = None,
    nperseg: int | None = None,
) -> dict[str, Any]:
    """Figure 2's data for one HADES model: per-group spectra, summaries and the comparison.

    docs: token id lists; layer: 0-based index into model.layers, None = the middle layer;
    nperseg: Welch segment length, default `default_nperseg` (shorter documents are skipped).
    """
    n_layer = len(model.layers)
    layer = resolve_layer(layer, n_layer)
    nperseg = nperseg or default_nperseg([len(d) for d in docs])
    docs = [d for d in docs if len(d) >= nperseg]
    assert docs, f"no document has the {nperseg} tokens of one Welch segment"
    freqs = frequencies(nperseg)
    Q, S = slot_layout(model)
    experts, shared = list(range(Q)), list(range(Q, Q + S))

    with_bias = slot_power(model, docs, layer, nperseg, bias=True)
    groups: dict[str, Any] = {}
    if S:
        groups["shared"] = group_summary(with_bias, shared, freqs)
    if Q:
        groups["expert"] = group_summary(with_bias, experts, freqs)
        groups["expert_no_bias"] = group_summary(
            slot_power(model, docs, layer, nperseg, bias=False), experts, freqs
        )
    return {
        "layer": layer,
        "n_layer": n_layer,
        "slots": {"Q_experts": Q, "S_shared": S, "layout": "[Q expert slots, then S shared slots]"},
        "text": {"n_docs": len(docs), "n_tokens": int(sum(len(d) for d in docs))},
        "method": {
            "estimator": "welch",
            "nperseg": nperseg,
            "overlap": 0.5,
            "window": "hann",
            "detrend": "segment mean",
            "normalisation": "unit power over f > 0 per slot",
            "hf_cutoff": HF_CUTOFF,
            "freq_unit": "cycles/token",
        },
        "freqs": freqs.round(6).tolist(),
        "groups": groups,
        "comparison": compare(groups),
    }


def summary_line(result: Mapping[str, Any]) -> str:
    """One sentence with the numbers, for logs and the report."""
    parts = []
    c = result["comparison"]
    if c.get("shared_vs_expert"):
        d = c["shared_vs_expert"]
        parts.append(
            f"centroid shared {d['centroid_shared']:.4f} vs expert {d['centroid_expert']:.4f} cycles/token "
            f"({'shared lower' if d['holds'] else 'shared NOT lower'})"
        )
    if c.get("bias_effect"):
        d = c["bias_effect"]
        parts.append(
            f"expert centroid with bias {d['centroid_with_bias']:.4f} vs without {d['centroid_without_bias']:.4f} "
            f"({'bias raises it' if d['holds'] else 'bias does NOT raise it'})"
        )
    # a one-group model (shared-only ablation) has nothing to compare: state its centroid
    parts = parts or [f"{k} centroid {g['centroid']:.4f}" for k, g in result["groups"].items()]
    return "; ".join(parts)


def _db(magnitude) -> np.ndarray:
    """20·log10 |X| of the bins f > 0."""
    return 20 * np.log10(np.maximum(np.asarray(magnitude)[1:], 1e-12))


def plot(result: Mapping[str, Any], title: str | None = None):
    """Figure 2 from an `analyze` result: one panel per group, a thin line per slot, the group
    mean thick; magnitude in dB (20·log10 of the unit-power-normalised magnitude), shared y axis
    across panels."""
    freqs = np.asarray(result["freqs"])
    keys = [k for k in ("shared", "expert", "expert_no_bias") if k in result["groups"]]
    with style.style():
        fig, axes = style.new_figure(
            3.4 * len(keys), 3.2, ncols=len(keys), sharey=True, squeeze=False
        )
        for ax, key in zip(axes[0], keys):
            g = result["groups"][key]
            color = style.GROUP_COLORS[key]
            for mag in g["magnitude"]:
                ax.plot(freqs[1:], _db(mag), color=color, alpha=0.35, linewidth=0.9)
            ax.plot(
                freqs[1:],
                _db(g["mean_magnitude"]),
                color=color,
                linewidth=2.2,
                label="mean",
            )
            ax.axvline(HF_CUTOFF, color="#999999", linewidth=0.8, linestyle=":")
            ax.set_xlim(0, 0.5)
            ax.set_title(style.GROUP_TITLES[key])
            ax.set_xlabel("frequency (cycles / token)")
            style.note(
                ax,
                f"{len(g['slots'])} slots\ncentroid {g['centroid']:.3f}\nHF ratio {g['hf_ratio']:.2f}",
            )
        axes[0][0].set_ylabel("magnitude (dB, normalised)")
        text = result.get("text", {})
        fig.suptitle(
            (title or "Filter spectra")
            + f" — layer {result['layer']} of {result['n_layer']} (0-based), {text.get('n_tokens', '?')} tokens"
        )
    return fig


def run(
    ckpt_dir: str | Path,
    docs: Sequence[Sequence[int]],
    out_json: str | Path,
    fig_paths: Sequence[str | Path],
    layer: int | None = None,
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
        **analyze(model, docs, layer),
        **(extra or {}),
    }
    result["summary"] = summary_line(result)
    log.info("%s: %s", model_id, result["summary"])
    write_json(out_json, result)
    style.save_figure(plot(result, title=f"{label or model_id}: filter spectra"), *fig_paths)
    return result


def from_config(
    cfg: Config,
    model_id: str,
    ckpt_dir: str | Path,
    val_jsonl: str | Path,
    out_json: str | Path,
    fig_paths: Sequence[str | Path],
) -> dict[str, Any]:
    """Rule `spectrum`: the documents and the layer from the config's `analysis:` section."""
    from .common import load_documents

    docs, source = load_documents(cfg.analysis, ckpt_dir, val_jsonl, cfg.seed)
    extra = {"documents": source, "analysis_config": dict(cfg.raw_section("analysis")), "config_hash": cfg.hash()}
    return run(
        ckpt_dir,
        docs,
        out_json,
        fig_paths,
        layer=cfg.analysis.layer,
        model_id=model_id,
        label=cfg.experiment(model_id).label,
        extra=extra,
    )

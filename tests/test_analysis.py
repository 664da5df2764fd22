"""Tests of hades/analysis: Figure 2's spectrum ranking, Figure 4's Δ statistics, the figure
writers, and the headless-browser check of the Snakemake HTML report.

The analyses run on a synthetic HADES-like mixer whose slots are filters with known responses,
so the expected ranking is known in advance:
  - shared slots: exponential moving average (low-pass),
  - expert slots: first difference (high-pass) with the spectral bias, the same moving average
    (low-pass) with `spectral_bias = False`,
  - Δ: softplus(a) without the bias, softplus(a + γ·b) with it, b = -1 at every 4th position and
    +1 elsewhere, so exactly the known share of the differences is positive.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hades.models.lm as lm
from hades.analysis import curves, delta, passkey_figure, report_check, spectrum, style, summary
from hades.config import ModelConfig
from hades.models.mixers.base import Mixer, MixerOutput

EMA_DECAY = 0.9


class SyntheticHadesMixer(Mixer):
    """A stand-in with the HADES analysis contract (hooks, `spectral_bias`, slot layout)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__(cfg, layer_idx)
        H, P = cfg.n_active, cfg.head_dim
        self.Q = cfg.n_active - cfg.n_shared
        self.in_proj = nn.Linear(cfg.d_model, H * P, bias=False)
        self.out_proj = nn.Linear(H * P, cfg.d_model, bias=False)
        self.hook_slot_outputs = nn.Identity()
        self.hook_delta = nn.Identity()
        self.hook_delta_no_bias = nn.Identity()
        self.hook_routing = nn.Identity()
        self.spectral_bias = True

    @staticmethod
    def low_pass(x):  # x: (B, T, n, P); y_t = a y_{t-1} + (1 - a) x_t
        out, h = [], torch.zeros_like(x[:, 0])
        for t in range(x.shape[1]):
            h = EMA_DECAY * h + (1 - EMA_DECAY) * x[:, t]
            out.append(h)
        return torch.stack(out, 1)

    @staticmethod
    def high_pass(x):  # y_t = x_t - x_{t-1}
        return x - F.pad(x, (0, 0, 0, 0, 1, 0))[:, :-1]

    def forward(self, u, return_state=False):
        B, T, _ = u.shape
        H, Q = self.cfg.n_active, self.Q
        x = self.in_proj(u).view(B, T, H, -1)
        expert = self.high_pass(x[:, :, :Q]) if self.spectral_bias else self.low_pass(x[:, :, :Q])
        y = self.hook_slot_outputs(torch.cat([expert, self.low_pass(x[:, :, Q:])], dim=2))
        a = torch.zeros(B, T, H)
        b = torch.ones(B, T, H)
        b[:, ::4] = -1.0
        b[:, :, Q:] = 0.0  # shared slots carry no bias
        self.hook_delta_no_bias(F.softplus(a))
        self.hook_delta(F.softplus(a + 0.25 * b) if self.spectral_bias else F.softplus(a))
        self.hook_routing(torch.arange(H).expand(B, T, H))
        return MixerOutput(self.out_proj(y.flatten(2)), {}, None)


CFG = ModelConfig(
    arch="hades", d_model=32, n_layer=3, vocab_size=64, head_dim=8, expand=2, n_active=4, n_shared=2
)


@pytest.fixture
def synthetic_model(monkeypatch):
    monkeypatch.setattr(lm, "build_mixer", lambda cfg, i: SyntheticHadesMixer(cfg, i))
    torch.manual_seed(0)
    return lm.build_model(CFG).eval()


def random_docs(n=3, length=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, CFG.vocab_size, (length,), generator=g).tolist() for _ in range(n)]


# -- Figure 2: spectra -----------------------------------------------------------------------------


def test_welch_power_peaks_at_the_sine_frequency():
    T, f0 = 256, 0.125
    t = torch.arange(T, dtype=torch.float64)
    y = torch.sin(2 * torch.pi * f0 * t).view(1, T, 1, 1)
    power, n = spectrum.welch_power(y, 64)
    freqs = spectrum.frequencies(64)
    assert freqs[int(power[0].argmax())] == pytest.approx(f0)
    assert spectrum.centroid(power.numpy(), freqs)[0] == pytest.approx(f0, abs=0.02)
    assert n == 7  # (256 - 64) / 32 + 1 segments


def test_spectrum_ranks_low_pass_shared_below_high_pass_experts(synthetic_model):
    res = spectrum.analyze(synthetic_model, random_docs(), layer=None)
    assert res["layer"] == 1  # the middle of 3 layers
    g, c = res["groups"], res["comparison"]
    assert g["shared"]["slots"] == [2, 3] and g["expert"]["slots"] == [0, 1]
    # EMA(0.9) of white noise keeps most power below 0.1 cycles/token; a difference filter puts
    # most above 0.25.
    assert g["shared"]["centroid"] < 0.12 < 0.3 < g["expert"]["centroid"]
    assert g["shared"]["hf_ratio"] < 0.2 < 0.7 < g["expert"]["hf_ratio"]
    assert c["shared_vs_expert"]["holds"] is True
    assert c["shared_vs_expert"]["centroid_expert_minus_shared"] > 0.2
    # Without the bias the synthetic experts are the same low-pass filter as the shared slots.
    assert g["expert_no_bias"]["centroid"] == pytest.approx(g["shared"]["centroid"], abs=0.03)
    assert c["bias_effect"]["holds"] is True and c["bias_effect"]["centroid_shift"] > 0.2
    assert synthetic_model.layers[1].mixer.spectral_bias is True, "the switch must be restored"
    assert "shared lower" in spectrum.summary_line(res)


def test_spectrum_detects_the_opposite_ranking(synthetic_model, monkeypatch):
    """If the shared slots were high-pass, the comparison must say the claim does not hold."""
    lp, hp = SyntheticHadesMixer.low_pass, SyntheticHadesMixer.high_pass
    monkeypatch.setattr(SyntheticHadesMixer, "low_pass", staticmethod(hp))
    monkeypatch.setattr(SyntheticHadesMixer, "high_pass", staticmethod(lp))
    res = spectrum.analyze(synthetic_model, random_docs(), layer=0)
    assert res["comparison"]["shared_vs_expert"]["holds"] is False
    assert res["comparison"]["bias_effect"]["holds"] is False
    assert "NOT" in spectrum.summary_line(res)


def test_spectrum_without_shared_slots(monkeypatch):
    monkeypatch.setattr(lm, "build_mixer", lambda cfg, i: SyntheticHadesMixer(cfg, i))
    model = lm.build_model(ModelConfig(**{**CFG.__dict__, "n_shared": 0})).eval()
    res = spectrum.analyze(model, random_docs(n=1), layer=2)
    assert set(res["groups"]) == {"expert", "expert_no_bias"}
    assert res["comparison"]["shared_vs_expert"] is None


def test_spectrum_rejects_a_layer_outside_the_model(synthetic_model):
    with pytest.raises(ValueError, match="outside the model's layers"):
        spectrum.analyze(synthetic_model, random_docs(n=1), layer=3)


# -- Figure 4: Δ differences ------------------------------------------------------------------------


def test_delta_fraction_positive_on_a_constructed_case(synthetic_model):
    docs = random_docs(n=2, length=100)  # b = -1 at t = 0, 4, 8, ...: 25 of 100 positions
    res = delta.analyze(synthetic_model, docs)
    assert res["n_tokens"] == 200 and res["n_values"] == 3 * 200 * 2
    assert res["fraction_positive"] == pytest.approx(0.75)
    assert res["fraction_negative"] == pytest.approx(0.25)
    assert res["shared_max_abs_diff"] == 0.0
    expected = float(F.softplus(torch.tensor(0.25)) - F.softplus(torch.tensor(0.0)))
    assert res["max"] == pytest.approx(expected, rel=1e-6)
    assert sum(res["histogram"]["counts"]) == res["n_values"]
    assert all(layer["fraction_positive"] == pytest.approx(0.75) for layer in res["per_layer"])


def test_shared_only_model_has_no_delta_statistics(monkeypatch, tmp_path):
    monkeypatch.setattr(lm, "build_mixer", lambda cfg, i: SyntheticHadesMixer(cfg, i))
    model = lm.build_model(ModelConfig(**{**CFG.__dict__, "n_shared": 4})).eval()
    res = delta.analyze(model, random_docs(n=1, length=40))
    assert res["n_values"] == 0 and res["fraction_positive"] is None and res["n_tokens"] == 40
    assert "no spectral bias" in delta.summary_line(res)
    style.save_figure(delta.plot(res), tmp_path / "empty")
    assert_png_pdf(tmp_path / "empty")
    assert set(spectrum.analyze(model, random_docs(n=1))["groups"]) == {"shared"}


def test_delta_histogram_spans_zero_with_zero_on_an_edge():
    h = delta.histogram(np.array([0.5, 1.0, 2.0]), bins=4)
    assert h["edges"][0] == 0.0 and h["edges"][-1] == 2.0 and sum(h["counts"]) == 3
    v = np.array([-0.21, -0.004, 0.003, 0.05, 0.1])
    h = delta.histogram(v, bins=7)
    edges, counts = np.asarray(h["edges"]), np.asarray(h["counts"])
    assert np.isclose(edges, 0.0).any() and sum(counts) == len(v)
    centers = (edges[:-1] + edges[1:]) / 2
    assert counts[centers > 0].sum() == 3 and counts[centers < 0].sum() == 2


# -- figure writers --------------------------------------------------------------------------------


def assert_png_pdf(stem: Path):
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    assert pdf.read_bytes()[:5] == b"%PDF-", f"{pdf} is not a PDF"


def test_spectrum_and_delta_run_write_json_and_figures(synthetic_model, tmp_path):
    ckpt = tmp_path / "ckpt"
    synthetic_model.save_pretrained(ckpt)
    docs = random_docs(n=2, length=96)
    res = spectrum.run(
        ckpt, docs, tmp_path / "spectrum.json", [tmp_path / "fig2"], layer=1, model_id="hades"
    )
    saved = json.loads((tmp_path / "spectrum.json").read_text())
    assert (
        saved["comparison"]["shared_vs_expert"]["holds"] is True
        and saved["summary"] == res["summary"]
    )
    assert_png_pdf(tmp_path / "fig2")
    delta.run(ckpt, docs, tmp_path / "delta.json", [tmp_path / "fig4.png", tmp_path / "fig4.pdf"])
    assert json.loads((tmp_path / "delta.json").read_text())["fraction_positive"] == pytest.approx(
        0.75
    )
    assert_png_pdf(tmp_path / "fig4")


def test_style_colours_are_stable_and_distinct():
    ids = list(style.GRID_COLORS)
    assert len({style.grid_color(g) for g in ids}) == len(ids)
    assert style.grid_color("my_new_ablation") == style.grid_color("my_new_ablation")
    assert style.order_grid(["hades", "zzz", "mamba2", "linear_attn"]) == [
        "linear_attn",
        "mamba2",
        "hades",
        "zzz",
    ]
    with pytest.raises(ValueError, match="unsupported suffix"):
        style.save_figure(style.new_figure()[0], "x.svg")


def write_metrics(root: Path, model: str, n: int = 5, aux: bool = False):
    d = root / "train" / model
    d.mkdir(parents=True)
    with open(d / "metrics.jsonl", "w") as f:
        for i in range(n):
            row = {
                "step": 10 * (i + 1),
                "tokens": 2048 * 10 * (i + 1),
                "loss": 6.0 - i * 0.5 + 0.01,
                "ce": 6.0 - i * 0.5,
                "lr": 1e-3,
            }
            if aux:
                row |= {"aux/balance": 1e-3 / (i + 1), "aux/diversity": 2e-3 / (i + 1)}
            f.write(json.dumps(row) + "\n")
    (d / "summary.json").write_text(
        json.dumps({"n_params": 1_000_000 + len(model), "tokens_per_s": 5000.0, "final_ce": 4.0})
    )


def test_training_curves_and_efficiency_table(tmp_path):
    for gid in ("mamba2", "hades", "hades_no_balance"):
        write_metrics(tmp_path, gid, aux=gid.startswith("hades"))
    runs = {
        g: curves.read_run(tmp_path / "train" / g) for g in ("mamba2", "hades", "hades_no_balance")
    }
    assert curves.aux_keys(runs["hades"].metrics) == ["aux/balance", "aux/diversity"]
    assert curves.aux_keys(runs["mamba2"].metrics) == []
    assert curves.loss_key(runs["mamba2"].metrics) == "ce"  # CE, not CE + aux, is compared
    style.save_figure(curves.plot_loss(runs, labels={"hades": "HADES"}), tmp_path / "loss")
    style.save_figure(curves.plot_aux(runs), tmp_path / "aux")
    assert_png_pdf(tmp_path / "loss")
    assert_png_pdf(tmp_path / "aux")
    rows = curves.efficiency_rows(runs, labels={"hades": "HADES"}, reference="mamba2")
    by_id = {r["model"]: r for r in rows}
    assert (
        by_id["hades"]["label"] == "HADES" and by_id["mamba2"]["params_vs_reference_pct"] == 100.0
    )
    assert by_id["hades"]["final_loss"] == pytest.approx(4.0)
    summary.write_table(rows, tmp_path / "eff", "Parameters", curves.EFFICIENCY_HEADERS)
    assert (tmp_path / "eff.csv").read_text().startswith("model,")
    assert "| HADES |" in (tmp_path / "eff.md").read_text()
    assert "<table" in (tmp_path / "eff.html").read_text()


def test_a_table_write_failing_midway_keeps_the_old_table(tmp_path):
    """write_table's files are written atomically (hades.io): a row the CSV writer refuses (a
    field not in the header) used to leave a truncated CSV holding the rows before it."""
    summary.write_table([{"model": "a", "n": 1}], tmp_path / "t", "T")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="fields not in fieldnames"):
        summary.write_table([{"model": "b", "n": 2}, {"model": "c", "extra": 3}], tmp_path / "t", "T")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no .tmp left either
    assert sorted(before) == ["t.csv", "t.html", "t.md"]


def test_passkey_heatmap(tmp_path):
    for gid in ("mamba2", "hades"):
        d = tmp_path / gid
        d.mkdir()
        lines = ["length,depth,score,trials"]
        lines += [
            f"{L},{dp},{(L // 128 + int(10 * dp)) % 3},2"
            for L in (128, 256)
            for dp in (0.0, 0.5, 1.0)
        ]
        (d / "passkey.csv").write_text("\n".join(lines) + "\n")
    grids = {
        g: passkey_figure.read_passkey(tmp_path / g / "passkey.csv") for g in ("mamba2", "hades")
    }
    assert grids["hades"].scores.shape == (3, 2)  # depths x lengths
    fig = passkey_figure.plot(grids, labels={"hades": "HADES", "mamba2": "Mamba2"})
    style.save_figure(fig, tmp_path / "passkey")
    assert_png_pdf(tmp_path / "passkey")


# -- the HTML report opens in a headless browser and shows every image -------------------------------


def test_report_check_script_fails_on_a_missing_file(tmp_path):
    rc = report_check.main([str(tmp_path / "nope.html")])
    assert rc == 2


@pytest.mark.slow
def test_snakemake_report_renders_in_headless_chromium(tmp_path):
    """A two-figure workflow -> `snakemake --report` -> every image loads in chromium; the same
    report with one embedded image corrupted fails the check and names that image."""
    if report_check.find_chromium() is None:
        pytest.skip(
            "chromium is not installed (apt-get install chromium): the browser check cannot run"
        )
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "fig.rst").write_text(
        "A test figure ({{ snakemake.wildcards.name }}).\n"
    )
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            """
            rule all:
                input: expand("fig_{name}.png", name=["a", "b"])

            rule fig:
                output: report("fig_{name}.png", caption="report/fig.rst", category="Figures")
                run:
                    from hades.analysis import style
                    fig, ax = style.new_figure(3, 2)
                    ax.plot([0, 1], [0, 1])
                    style.save_figure(fig, output[0])
            """
        )
    )
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "1", "-s", "Snakefile"]
    report = tmp_path / "report.html"
    for extra in (["--quiet"], ["--report", str(report)]):
        proc = subprocess.run(snakemake + extra, cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]

    good = report_check.check_report(report, min_images=2)
    assert good["ok"], good["failures"]
    assert good["app_rendered"] and not good["js_errors"]
    assert [(Path(r["path"]).name, r["kind"], r["has_caption"]) for r in good["results"]] == [
        ("fig_a.png", "image", True),
        ("fig_b.png", "image", True),
    ]
    assert all(r["width"] > 0 and r["height"] > 0 for r in good["results"])
    assert report_check.main([str(report), "--min-images", "2"]) == 0
    assert report_check.main([str(report), "--min-images", "3"]) == 1

    # corrupt fig_b's embedded PNG: the check must fail and name it
    page = report.read_text()
    uri = re.search(
        r"data:image/png;charset=[^;]*;filename=fig_b\.png;base64,[A-Za-z0-9+/=]+", page
    ).group(0)
    broken = tmp_path / "broken.html"
    broken.write_text(
        page.replace(
            uri, uri.split("base64,")[0] + "base64," + base64.b64encode(b"not a png").decode()
        )
    )
    bad = report_check.check_report(broken)
    assert not bad["ok"]
    assert {Path(r["path"]).name: r["ok"] for r in bad["results"]} == {
        "fig_a.png": True,
        "fig_b.png": False,
    }
    assert any("fig_b.png" in f for f in bad["failures"])
    assert report_check.main([str(broken)]) == 1

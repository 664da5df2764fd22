"""The study table (hades.analysis.study): unigram baselines from the token shards, validation
loss from lm_eval.json, and the clipping / balance-loss statistics from metrics.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hades.analysis import study


def write_tokens(root: Path, splits: dict[str, list[int]], vocab_size: int = 8) -> Path:
    """A token manifest + one uint16 shard per split, in the layout TokenDataset reads."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"dtype": "uint16", "vocab_size": vocab_size, "eos_id": 0, "splits": {}}
    for split, ids in splits.items():
        arr = np.asarray(ids, dtype=np.uint16)
        name = f"{split}-00000-of-00001.bin"
        arr.tofile(root / name)
        manifest["splits"][split] = {
            "n_tokens": len(ids),
            "shards": [{"file": name, "bytes": arr.nbytes, "n_tokens": len(ids)}],
        }
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def test_unigram_baselines_match_hand_computed_values(tmp_path):
    # train: ids 1 and 2 twice each, 3 four times -> p = (1/4, 1/4, 1/2)
    manifest = write_tokens(tmp_path, {"train": [1, 1, 2, 2, 3, 3, 3, 3], "val": [3, 5]})
    b = study.unigram_baselines(manifest)
    assert b["unigram_entropy"] == pytest.approx(-(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)))
    # add-one over 8 ids: q(3) = 5/16, q(5) = 1/16 (an id never seen in training)
    assert b["unigram_val_ce"] == pytest.approx(-(math.log(5 / 16) + math.log(1 / 16)) / 2)
    assert (b["train_tokens"], b["val_tokens"], b["distinct_train_tokens"]) == (8, 2, 3)


def test_training_dynamics_counts_clipped_steps_and_the_balance_spike():
    metrics = [
        {"step": 1, "ce": 10.0, "grad_norm": 3.0, "aux/balance": 0.5},
        {"step": 2, "ce": 9.0, "grad_norm": 0.5, "aux/balance": 40.0},  # the spike, above the CE
        {"step": 3, "ce": 8.0, "grad_norm": 1.5, "aux/balance": 0.1},
        {"step": 4, "ce": 7.0, "grad_norm": 0.9, "aux/balance": 0.2},
    ]
    d = study.training_dynamics(metrics, grad_clip=1.0)
    assert d["clip_frac"] == pytest.approx(0.5)  # steps 1 and 3 exceed the clip
    assert (d["balance_max"], d["balance_max_step"], d["ce_at_balance_max"]) == (40.0, 2, 9.0)
    assert d["balance_median"] == pytest.approx(0.35)
    assert d["balance_over_ce_frac"] == pytest.approx(0.25)
    no_aux = study.training_dynamics([{"step": 1, "ce": 5.0, "grad_norm": 0.1}], grad_clip=1.0)
    assert no_aux["clip_frac"] == 0.0 and "balance_max" not in no_aux


def test_study_reads_the_pipeline_files(tmp_path):
    manifest = write_tokens(tmp_path / "tokens", {"train": [1, 2, 3, 4] * 4, "val": [1, 2]})
    files = {}
    for model, ppl in (("mamba2", 2.0), ("hades", None)):
        d = tmp_path / model
        d.mkdir()
        (d / "summary.json").write_text(json.dumps({"arch": model, "n_params": 10, "tokens": 16, "final_ce": 1.5}))
        (d / "metrics.jsonl").write_text(
            "".join(json.dumps({"step": i, "ce": 2.0, "grad_norm": 2.0 * i}) + "\n" for i in range(1, 3))
        )
        metrics = {"toy_ppl/token_perplexity": ppl} if ppl else {"wikitext/word_perplexity": 30.0}
        (d / "lm_eval.json").write_text(json.dumps({"metrics": metrics}))
        files[model] = d
    res = study.study(
        manifest,
        {m: d / "summary.json" for m, d in files.items()},
        {m: d / "metrics.jsonl" for m, d in files.items()},
        {m: d / "lm_eval.json" for m, d in files.items()},
        {"mamba2": 1.0, "hades": 3.0},
        {"mamba2": "Mamba2"},
    )
    m2, ha = res["models"]["mamba2"], res["models"]["hades"]
    assert m2["val_loss"] == pytest.approx(math.log(2.0))
    assert m2["val_minus_unigram"] == pytest.approx(math.log(2.0) - math.log(4.0))
    assert m2["clip_frac"] == 1.0 and ha["clip_frac"] == 0.5  # each model's own grad_clip
    assert ha["val_loss"] is None and ha["val_minus_unigram"] is None  # toy_ppl not evaluated
    rows = study.study_rows(res)
    assert [r["model"] for r in rows] == ["Mamba2", "hades"]
    assert list(rows[0]) == list(study.STUDY_HEADERS)

"""Shared helpers of the evaluation tests (test_eval_harness, test_passkey, test_prepare, test_tables).

- SHARED_DATA: the real benchmark samples and the GPT-NeoX tokenizer (../shared/data, see its
  SOURCES.md); tests that need it skip only when it is absent.
- tiny_model(): a small randomly initialised LM of the first grid arch whose mixer imports
  (the real mixers, not a stand-in), on CPU in fp32.
- save_checkpoint(): the layout the trainer exports, results/checkpoints/{model}/final/.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import pytest
import torch

from hades.config import ModelConfig

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
NEOX_TOKENIZER = SHARED_DATA / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"

# where each of the nine tasks' real sample lives (SOURCES.md)
SAMPLES = {
    "wikitext": "wikitext/valid.txt",
    "lambada_openai": "lambada_openai/lambada_test.jsonl",
    "piqa": "piqa/dev.jsonl",
    "hellaswag": "hellaswag/hellaswag_val_full.txt",
    "winogrande": "winogrande/dev.jsonl",
    "arc_easy": "arc_easy/test.jsonl",
    "arc_challenge": "arc_challenge/test.jsonl",
    "boolq": "boolq/val.jsonl",
    "openbookqa": "openbookqa/test.tsv",
}
SAMPLE_RECORDS = {"wikitext": 60, "lambada_openai": 1000, "piqa": 919, "hellaswag": 1000, "winogrande": 635,
                  "arc_easy": 1000, "arc_challenge": 585, "boolq": 1000, "openbookqa": 250}

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"no shared data at {SHARED_DATA}")

ARCH_PREFERENCE = ("mamba2", "hades", "linear_attn", "retnet", "deltanet", "mamba")


def offline_env() -> None:
    """lm-eval must never reach the hub in these tests (set before `datasets` is imported)."""
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")


@functools.cache
def available_arch() -> str:
    from hades.models.mixers import mixer_class

    for arch in ARCH_PREFERENCE:
        try:
            mixer_class(arch)
        except (ImportError, AttributeError):
            continue
        return arch
    pytest.skip("no mixer implementation is importable yet")


def tiny_config(vocab_size: int) -> ModelConfig:
    arch = available_arch()
    return ModelConfig(
        arch=arch, d_model=32, n_layer=2, vocab_size=vocab_size, head_dim=16, d_state=8, expand=2,
        num_heads=2, n_active=2, n_shared=1, chunk_size=16, kernel="reference",
        mlp_ratio=2.0 if arch in ("linear_attn", "retnet", "deltanet") else 0.0,
    )


def tiny_model(vocab_size: int, seed: int = 0):
    from hades.models import build_model

    torch.manual_seed(seed)
    model = build_model(tiny_config(vocab_size))
    return model.eval()


@functools.cache
def neox_tokenizer():
    from hades.data.tokenizer import load_tokenizer

    if not NEOX_TOKENIZER.is_file():
        pytest.skip(f"no GPT-NeoX tokenizer at {NEOX_TOKENIZER}")
    return load_tokenizer(NEOX_TOKENIZER)


def save_checkpoint(model, tokenizer, root: Path, grid_id: str) -> Path:
    """results/checkpoints/{grid_id}/final/ as the trainer exports it (HF dir + tokenizer)."""
    final = root / "checkpoints" / grid_id / "final"
    model.save_pretrained(str(final))
    tokenizer.save_pretrained(str(final))
    return final


def toy_cfg(results_dir: Path, **sections):
    """config/config.yaml with results_dir (and any top-level section) replaced."""
    import yaml

    from hades.config import load_config

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["results_dir"] = str(results_dir)
    for key, value in sections.items():
        raw[key] = value if not isinstance(value, dict) else {**raw.get(key, {}), **value}
    return load_config(raw, source="test-config")


def model_config_dict(cfg: ModelConfig) -> dict:
    return dataclasses.asdict(cfg)

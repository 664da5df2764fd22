"""Parameter counts of every grid id of a config: `hades params CONFIG [--json]`.

Each model is built on the meta device (nothing is allocated, so the ~370M paper models count
in seconds on a laptop) with the vocabulary its tokenizer will have:

- `tokenizer.kind: train_bpe` (the toy config): `tokenizer.vocab_size`;
- `kind: file`: the size of that tokenizer.json when the path exists (relative paths resolve
  against the working directory, as the pipeline's do), else `FALLBACK_VOCAB["file"]`;
- `kind: hub`: `FALLBACK_VOCAB["hub"]` (counting must work offline).

Both fallbacks are the paper's GPT-NeoX-20B tokenizer (50,277 tokens, docs/paper.md "Scale and
training recipe"), which is what config/paper.yaml names. An experiment's explicit
`model.vocab_size` wins over all of these. Embeddings are padded to `pad_vocab_multiple` and, when
tied, counted once.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hades.config import Config, ConfigError, load_config

GPT_NEOX_20B_VOCAB = 50277
FALLBACK_VOCAB = {"file": GPT_NEOX_20B_VOCAB, "hub": GPT_NEOX_20B_VOCAB}


def tokenizer_vocab(cfg: Config) -> tuple[int, str]:
    """(vocab size, where it came from) for the config's tokenizer section."""
    tok = cfg.tokenizer
    kind = tok["kind"]
    if kind == "train_bpe":
        if "vocab_size" not in tok:
            raise ConfigError(f"{cfg.source}: tokenizer.vocab_size: required for kind train_bpe")
        return int(tok["vocab_size"]), "`tokenizer.vocab_size`"
    if kind == "file" and tok.get("path"):
        path = Path(tok["path"])
        file = path / "tokenizer.json" if path.is_dir() else path
        if file.is_file():
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(file)).get_vocab_size(with_added_tokens=True), f"`{file}`"
        return FALLBACK_VOCAB[kind], f"`{file}` absent here: the GPT-NeoX-20B size"
    return FALLBACK_VOCAB[kind], f"tokenizer kind {kind!r}, counted offline: the GPT-NeoX-20B size"


def count_params(cfg: Config, grid_ids: list[str] | None = None) -> dict[str, dict]:
    """{grid id: {"arch", "n_layer", "d_model", "vocab_size", "params"}} for `grid_ids` (default:
    the whole grid), each model built on the meta device."""
    import torch

    from hades.models import build_model

    vocab, _ = tokenizer_vocab(cfg)
    rows = {}
    for gid in grid_ids or list(cfg.experiments):
        m = cfg.experiment(gid).model
        if m.vocab_size is None:
            m = dataclasses.replace(m, vocab_size=vocab)
        with torch.device("meta"):
            model = build_model(m)
        rows[gid] = dict(
            arch=m.arch,
            n_layer=m.n_layer,
            d_model=m.d_model,
            vocab_size=m.vocab_size,
            params=sum(p.numel() for p in model.parameters()),  # shared (tied) tensors once
        )
    return rows


def count_params_table(config_path: str | Path, as_json: bool = False) -> str:
    """Markdown table of every grid id (or, with as_json, a JSON object {grid id: count})."""
    cfg = load_config(config_path)
    rows = count_params(cfg)
    if as_json:
        return json.dumps({gid: r["params"] for gid, r in rows.items()}, indent=2)
    vocab, vocab_source = tokenizer_vocab(cfg)
    ref = rows.get("mamba2", {}).get("params")
    pad = next(iter(cfg.experiments.values())).model.pad_vocab_multiple
    lines = [
        f"## `{config_path}` ({cfg.name})",
        "",
        f"Vocabulary {vocab:,} ({vocab_source}), padded to a multiple of {pad}; tied embeddings "
        f"counted once. Regenerate with `hades params {config_path}`.",
        "",
        "| grid id | arch | layers | width | params | ratio to mamba2 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for gid, r in rows.items():
        ratio = f"{r['params'] / ref:.3f}" if ref else "n/a"
        lines.append(
            f"| {gid} | {r['arch']} | {r['n_layer']} | {r['d_model']} | {r['params']:,} | {ratio} |"
        )
    return "\n".join(lines)

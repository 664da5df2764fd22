"""What the analyses share: loading a trained checkpoint and its tokenizer, sampling the documents
they run on, finding the analysed layer, capturing hook outputs, switching the spectral bias.

The analyses read files only (checkpoints and the corpus the `corpus` rule wrote), never MLflow,
so that each figure rule can be rerun alone.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from hades.config import AnalysisConfig


def load_checkpoint(ckpt_dir: str | Path) -> nn.Module:
    """A trained `HadesForCausalLM` from its HF directory, in eval mode, fp32, on CPU; strictly
    (hades.models.load_pretrained: a damaged export is refused, not analysed)."""
    from hades.models import load_pretrained

    model = load_pretrained(ckpt_dir).float()
    return model.eval()


def load_documents(
    analysis: AnalysisConfig, ckpt_dir: str | Path, val_jsonl: str | Path, seed: int
) -> tuple[list[list[int]], dict[str, Any]]:
    """The token sequences an analysis runs on, and a record of where they came from.

    `analysis` is the config's `analysis:` section (hades.config.AnalysisConfig): its `sample_text` when set (the paper's
    Figure 2 uses one sample sentence), else `delta_docs` documents of the validation split
    drawn with `seed`, at most `delta_max_tokens` tokens in all. Each sequence starts with the
    end-of-text token, as every document does in the training shards. The tokenizer is the one
    saved with the checkpoint.
    """
    from hades.data.io import iter_jsonl
    from hades.data.tokenizer import load_backend

    tok, eos_id, _ = load_backend(ckpt_dir)

    def encode(text: str) -> list[int]:
        return [eos_id, *tok.encode(text).ids]

    if analysis.sample_text:
        docs = [encode(analysis.sample_text)]
        source = {"source": "analysis.sample_text"}
    else:
        n_docs = analysis.delta_docs
        max_tokens = analysis.delta_max_tokens
        texts = list(iter_jsonl(val_jsonl, "text"))
        docs = sample_token_docs(texts, encode, n_docs, max_tokens, seed)
        source = {
            "source": str(val_jsonl),
            "seed": seed,
            "delta_docs": n_docs,
            "delta_max_tokens": max_tokens,
        }
    return docs, {**source, "n_docs": len(docs), "n_tokens": sum(map(len, docs))}


def sample_token_docs(
    texts: Sequence[str], encode, n_docs: int, max_tokens: int, seed: int, min_tokens: int = 8
) -> list[list[int]]:
    """`n_docs` documents drawn without replacement (seeded), tokenised, at most `max_tokens`
    tokens in total (the last document is cut to fit), each at least `min_tokens` long.

    `encode(text) -> list[int]`. The paper samples 25 Pile documents, ~38,000 tokens (App. E).
    """
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    docs: list[list[int]] = []
    total = 0
    for i in order:
        if len(docs) == n_docs or total >= max_tokens:
            break
        ids = list(encode(texts[i]))[: max_tokens - total]
        if len(ids) >= min_tokens:
            docs.append(ids)
            total += len(ids)
    if not docs:
        raise ValueError(f"no document of at least {min_tokens} tokens among {len(texts)} texts")
    return docs


def resolve_layer(layer: int | None, n_layer: int) -> int:
    """The analysed layer: a 0-based index into `model.layers`; None = the middle layer."""
    idx = n_layer // 2 if layer is None else int(layer)
    if not 0 <= idx < n_layer:
        raise ValueError(f"analysis.layer = {layer} is outside the model's layers 0..{n_layer - 1}")
    return idx


def hades_mixers(model: nn.Module) -> list[nn.Module]:
    """The HADES mixers of a model, one per layer; an error if the model has none."""
    mixers = [block.mixer for block in model.layers]
    missing = [i for i, m in enumerate(mixers) if not hasattr(m, "hook_slot_outputs")]
    if missing:
        arch = getattr(getattr(model, "cfg", None), "arch", "?")
        raise TypeError(
            f"layers {missing} have no HADES hooks (arch {arch!r}): the analysis needs a HADES model"
        )
    return mixers


def slot_layout(model: nn.Module) -> tuple[int, int]:
    """(Q, S): the H slots are [Q expert slots, then S shared slots] (docs/CONTRACTS.md)."""
    cfg = model.cfg
    return cfg.n_active - cfg.n_shared, cfg.n_shared


@contextlib.contextmanager
def capture(modules: Mapping[str, nn.Module]) -> Iterator[dict[str, list[Tensor]]]:
    """Record the outputs of the given (hook) modules during the `with` block.

    Yields {name: [output of each call, detached, on CPU]}; the hooks are removed on exit, so
    nothing is stored on the modules themselves.
    """
    store: dict[str, list[Tensor]] = {name: [] for name in modules}
    handles = []
    for name, module in modules.items():

        def hook(_mod, _inp, out, name=name):
            store[name].append(out.detach().cpu())

        handles.append(module.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def spectral_bias(mixers: Sequence[nn.Module], enabled: bool) -> Iterator[None]:
    """Switch the HADES spectral bias γ·b on or off in the given mixers, restoring it after."""
    before = [m.spectral_bias for m in mixers]
    try:
        for m in mixers:
            m.spectral_bias = enabled
        yield
    finally:
        for m, b in zip(mixers, before):
            m.spectral_bias = b

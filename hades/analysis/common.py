"""What the analyses share: loading a trained checkpoint and its tokenizer, sampling the documents
they run on, finding the analysed layer, capturing hook outputs, and writing result JSON.

The analyses read files only (checkpoints and the corpus the `corpus` rule wrote), never MLflow,
so that each figure rule can be rerun alone.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn


def load_checkpoint(ckpt_dir: str | Path) -> nn.Module:
    """A trained `HadesForCausalLM` from its HF directory, in eval mode, fp32, on CPU."""
    from hades.models import HadesForCausalLM

    model = HadesForCausalLM.from_pretrained(str(ckpt_dir)).float()
    return model.eval()


def load_tokenizer(ckpt_dir: str | Path, fallback: str | Path | None = None):
    """The `tokenizers.Tokenizer` saved with a checkpoint (tokenizer.json), else `fallback`."""
    from tokenizers import Tokenizer

    for p in (Path(ckpt_dir) / "tokenizer.json", fallback):
        if p is not None and Path(p).is_file():
            return Tokenizer.from_file(str(p))
    raise FileNotFoundError(f"no tokenizer.json in {ckpt_dir} and no fallback given ({fallback})")


def read_texts(path: str | Path, field: str = "text") -> list[str]:
    """Texts of a JSONL corpus file (one document per line, the text under `field`)."""
    texts = []
    with open(path) as f:
        for i, line in enumerate(f):
            if line.strip():
                doc = json.loads(line)
                if field not in doc:
                    raise KeyError(f"{path}:{i + 1}: no {field!r} field (keys: {sorted(doc)})")
                texts.append(doc[field])
    return texts


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


def write_json(path: str | Path, obj: Mapping[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")

"""Rule `tokenizer`: results/tokenizer/tokenizer.json, and the one loader everyone uses.

    build_tokenizer(tok_cfg, corpus_dir, out_path) -> Path
    load_tokenizer(path) -> transformers.PreTrainedTokenizerFast   (eos/bos/pad set)

tokenizer.kind (config `tokenizer:`):
- train_bpe: byte-level BPE trained with HF `tokenizers` on the corpus's train split, vocab_size
  from the config; special token <|endoftext|> is id 0, the end-of-document separator (as in
  GPT-NeoX-20B, which the paper uses). Byte-level: every string round-trips, nothing is <unk>.
- file: a tokenizer.json on disk (the paper: GPT-NeoX-20B, vocab 50,277); validated, then
  copied into the results directory so every later stage reads one path and one hash.
- hub: a Hugging Face hub id through AutoTokenizer (online machines only); saved in the same
  place with its tokenizer_config.json.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hades.config import BPE_MIN_VOCAB
from hades.io import atomic_open

from .io import DataError, iter_jsonl

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
PAD = "<|padding|>"  # GPT-NeoX-20B's padding token; tokenizers without it pad with EOS
TRAIN_BPE_MAX_CHARS = 2_000_000_000  # BPE statistics saturate long before this


def build_tokenizer(
    tok_cfg: Mapping[str, Any], corpus_dir: str | Path | None, out_path: str | Path
) -> Path:
    """Produce the tokenizer.json of `tok_cfg` (the config's `tokenizer:`) at `out_path`."""
    out_path = Path(out_path)
    kind = tok_cfg["kind"]
    if kind == "train_bpe":
        if "vocab_size" not in tok_cfg:
            raise DataError("tokenizer.vocab_size: required for kind train_bpe")
        train = Path(corpus_dir or "") / "train.jsonl"
        tok = train_bpe(_capped(iter_jsonl(train, "text")), int(tok_cfg["vocab_size"]))
        with atomic_open(out_path, "w") as f:
            f.write(tok.to_str(pretty=True))
    elif kind == "file":
        src = Path(tok_cfg.get("path", ""))
        if not tok_cfg.get("path") or not src.is_file():
            raise DataError(f"tokenizer.path: no such tokenizer file: {tok_cfg.get('path')!r}")
        check_tokenizer_file(src)
        with atomic_open(out_path, "wb") as f, open(src, "rb") as g:
            shutil.copyfileobj(g, f)
    elif kind == "hub":
        from transformers import AutoTokenizer

        if not tok_cfg.get("name"):
            raise DataError("tokenizer.name: required for kind hub (a Hugging Face hub id)")
        tok = AutoTokenizer.from_pretrained(tok_cfg["name"])
        if not getattr(tok, "is_fast", False):
            raise DataError(
                f"tokenizer.name: {tok_cfg['name']} has no fast (tokenizer.json) version"
            )
        tok.save_pretrained(out_path.parent)
    else:
        raise DataError(f"tokenizer.kind: unknown kind {kind!r} (train_bpe, file, hub)")
    _, eos_id, size = load_backend(out_path)  # validates; transformers' import costs seconds
    log.info("tokenizer: %s, vocab %d, eos id %d", kind, size, eos_id)
    return out_path


def train_bpe(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE with <|endoftext|> = id 0. Deterministic for a given text sequence."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    if vocab_size < BPE_MIN_VOCAB:  # load_config refuses it first; this guards direct callers
        raise DataError(
            f"tokenizer.vocab_size: {vocab_size} is too small for a byte-level BPE (256 bytes + {EOS} "
            f"+ at least one merge = {BPE_MIN_VOCAB})"
        )
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    assert tok.token_to_id(EOS) == 0, f"{EOS} must be id 0, got {tok.token_to_id(EOS)}"
    return tok


def _capped(texts: Iterable[str]) -> Iterable[str]:
    n = 0
    for t in texts:
        yield t
        n += len(t)
        if n >= TRAIN_BPE_MAX_CHARS:
            log.info("tokenizer: BPE trained on the first %d characters of the train split", n)
            return


def check_tokenizer_file(path: str | Path) -> None:
    """A tokenizer.json that HF `tokenizers` loads and that has an end-of-text token."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:
        raise DataError(f"{path}: not a tokenizers JSON file ({str(e).splitlines()[0]})") from None
    if tok.token_to_id(EOS) is None and not (Path(path).parent / "tokenizer_config.json").is_file():
        raise DataError(
            f"{path}: has no {EOS} token and no tokenizer_config.json naming an eos_token"
        )


def load_tokenizer(path: str | Path):
    """The project's tokenizer as a `transformers.PreTrainedTokenizerFast`.

    `path` is a tokenizer.json or its directory. eos = bos = <|endoftext|> (the document
    separator of the token shards), pad = <|padding|> when the vocabulary has it, else eos.
    A directory with a tokenizer_config.json (kind hub, or a checkpoint) keeps its own
    special tokens; a missing pad token becomes eos.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{file}: no such tokenizer file (build it with `snakemake {file}`)")
    if (file.parent / "tokenizer_config.json").is_file():
        tok = PreTrainedTokenizerFast.from_pretrained(str(file.parent))
    else:
        tok = PreTrainedTokenizerFast(
            tokenizer_file=str(file), eos_token=EOS, bos_token=EOS, unk_token=EOS
        )
        if tok.convert_tokens_to_ids(PAD) not in (None, tok.unk_token_id):
            tok.pad_token = PAD
    if tok.eos_token is None:
        raise DataError(f"{file}: the tokenizer has no eos token")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_backend(path: str | Path):
    """(tokenizers.Tokenizer, eos id, vocab size) without importing transformers (fast start
    for the shard jobs); the same eos and size as `load_tokenizer(path)`."""
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{file}: no such tokenizer file (build it with `snakemake {file}`)")
    tok = Tokenizer.from_file(str(file))
    eos = EOS
    config = file.parent / "tokenizer_config.json"
    if config.is_file():
        eos = json.loads(config.read_text()).get("eos_token") or EOS
        eos = eos["content"] if isinstance(eos, dict) else eos
    eos_id = tok.token_to_id(eos)
    if eos_id is None:
        raise DataError(f"{file}: the tokenizer has no eos token {eos!r}")
    return tok, eos_id, tok.get_vocab_size(with_added_tokens=True)

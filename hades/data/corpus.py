"""Rule `corpus`: one function, three sources, the same files.

    build_corpus(data_cfg, out_dir, seed) -> manifest dict

writes, under out_dir (results/data/corpus/, docs/CONTRACTS.md):
    train.jsonl, val.jsonl   {"text": ...} per line, one document each
    cloze.jsonl              {"context", "continuation", "kind"}: held-out cloze items whose
                             continuation is one word with its leading space (lm-eval convention)
    corpus.json              manifest: generator version, config, seed, doc counts, and the
                             sha256 and size of each file (written last)

Sources (data.source):
- synthetic: the seeded toy language of hades/data/synthetic.py; n_docs train documents and
  val_docs held-out ones; cloze items come from the held-out documents' determined words.
- text_files: local text files; paragraphs (blank-line separated) are grouped into documents of
  about TEXT_DOC_CHARS characters; val_docs documents spread evenly over the whole are held out.
- hf_dataset: HF `datasets` (streaming by default: the paper's Pile); the first val_docs
  documents are held out, max_docs caps the documents read and max_train_tokens stops the
  stream at MAX_CHARS_PER_TOKEN characters per wanted token (tokenisation then caps exactly).
For real text the cloze item of a held-out document is its last word (the LAMBADA construction).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hades.config import DataConfig, HFDatasetConfig
from hades.io import atomic_open, sha256_bytes, sha256_file, write_json

from .io import DataError, iter_jsonl, utf8_problem
from .synthetic import GENERATOR_VERSION, cloze_item, iter_documents

log = logging.getLogger(__name__)

CORPUS_FILES = ("train.jsonl", "val.jsonl", "cloze.jsonl")
TEXT_DOC_CHARS = 2000
MAX_CHARS_PER_TOKEN = 6  # GPT-NeoX averages ~4 characters per token on the Pile
CLOZE_CONTEXT_WORDS = 200  # real-text cloze contexts keep the last this many words


class _JsonlWriter:
    """Atomic JSONL writer that hashes while it writes (a Pile-sized file is read once)."""

    def __init__(self, path: Path):
        self.path = path
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.records = 0

    def __enter__(self):
        self._cm = atomic_open(self.path, "wb")
        self._f = self._cm.__enter__()
        return self

    def write(self, rec: Mapping[str, Any]) -> None:
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
        self._f.write(line)
        self.sha.update(line)
        self.bytes += len(line)
        self.records += 1

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)

    def entry(self) -> dict:
        return {"sha256": self.sha.hexdigest(), "bytes": self.bytes, "records": self.records}


def build_corpus(data_cfg: Mapping[str, Any], out_dir: str | Path, seed: int) -> dict:
    """Write train/val/cloze JSONL and corpus.json for `data_cfg`, the config's `data:` as written
    (corpus.json records it so; the defaults are DataConfig's)."""
    out_dir = Path(out_dir)
    data = DataConfig.from_mapping(data_cfg)
    source = data.source
    val_docs = data.val_docs
    writers = {name: _JsonlWriter(out_dir / name) for name in CORPUS_FILES}
    with (
        writers["train.jsonl"] as train,
        writers["val.jsonl"] as val,
        writers["cloze.jsonl"] as cloze,
    ):
        if source == "synthetic":
            extra = _write_synthetic(data, seed, val_docs, train, val, cloze)
        elif source in ("text_files", "hf_dataset"):
            if source == "text_files":
                docs, extra = _text_file_documents(data.text_files)
                split = _spread_split(docs, val_docs)
            else:
                if data.hf_dataset is None:
                    raise DataError("data.hf_dataset: required for data.source hf_dataset")
                docs, extra = _hf_documents(data.hf_dataset, data_cfg["hf_dataset"])
                split = _head_split(docs, val_docs, data.max_train_tokens)
            for is_val, text in split:
                if is_val:
                    val.write({"text": text})
                    if item := last_word_cloze(text):
                        cloze.write(item)
                else:
                    train.write({"text": text})
        else:
            raise DataError(
                f"data.source: unknown source {source!r} (synthetic, text_files, hf_dataset)"
            )
    if train.records == 0 or val.records == 0:
        raise DataError(
            f"data: the corpus has {train.records} train and {val.records} val documents; "
            "need at least one of each (check data.val_docs and the source)"
        )
    manifest = {
        "generator": "hades.data.corpus",
        "version": GENERATOR_VERSION,
        "source": source,
        "config": dict(data_cfg),
        "seed": seed,
        "docs": {"train": train.records, "val": val.records, "cloze": cloze.records},
        "files": {name: w.entry() for name, w in writers.items()},
        **extra,
    }
    write_json(out_dir / "corpus.json", manifest)
    log.info("corpus: %s", json.dumps(manifest["docs"]))
    return manifest


def _write_synthetic(data: DataConfig, seed, val_docs, train, val, cloze) -> dict:
    cfg = data.synthetic
    for doc in iter_documents(cfg, seed, "train", cfg.n_docs):
        train.write({"text": doc.text})
    rng = random.Random(f"hades-synthetic:{seed}:cloze")
    kinds: dict[str, int] = {}
    for doc in iter_documents(cfg, seed, "val", val_docs):
        val.write({"text": doc.text})
        if item := cloze_item(doc, rng):
            cloze.write(item)
            kinds[item["kind"]] = kinds.get(item["kind"], 0) + 1
    return {"synthetic": dataclasses.asdict(cfg), "cloze_kinds": kinds}


def last_word_cloze(text: str, max_words: int = CLOZE_CONTEXT_WORDS) -> dict | None:
    """LAMBADA-style item: the document's last word (trailing punctuation dropped) given the
    words before it, at most `max_words` of them."""
    m = _LAST_WORD.search(text)
    if m is None:
        return None
    context = text[: m.start()].split()[-max_words:]
    if not context:
        return None
    return {"context": " ".join(context), "continuation": " " + m.group(1), "kind": "last_word"}


_LAST_WORD = re.compile(r"\s(\w[\w'-]*)\W*$")


# --- text files --------------------------------------------------------------------------------


TEXT_SUFFIXES = (".txt", ".md", ".jsonl")  # what a directory in data.text_files contributes


def expand_text_files(entries: Iterable[str]) -> list[Path]:
    """data.text_files -> the files it names, in a stable order. Each entry is a file, a
    directory (every .txt/.md/.jsonl file below it, sorted by path) or a glob pattern (sorted
    matches); one that names no file is a DataError naming it."""
    files: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        elif glob.has_magic(entry):
            found = sorted(Path(p) for p in glob.glob(entry, recursive=True) if Path(p).is_file())
        else:
            raise DataError(f"data.text_files: no such file: {entry}")
        if not found:
            raise DataError(f"data.text_files: {entry} names no {'/'.join(TEXT_SUFFIXES)} file")
        files += found
    return files


def _text_file_documents(paths: Iterable[str]) -> tuple[list[str], dict]:
    """Plain text is split into paragraph-grouped documents (split_paragraph_documents); a
    .jsonl file holds one document per line in its "text" field (the Pile's layout)."""
    paths = list(paths)
    if not paths:
        raise DataError("data.text_files: empty list (name at least one local text file)")
    docs: list[str] = []
    files = {}
    for path in expand_text_files(paths):
        p = str(path)
        if path.suffix == ".jsonl":
            texts = [t for t in iter_jsonl(path, "text") if isinstance(t, str) and t.strip()]
            files[p] = sha256_file(path)
            docs += texts
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"data.text_files: {utf8_problem(path) or f'{p}: not UTF-8'}") from None
        files[p] = sha256_bytes(text.encode("utf-8"))
        docs += split_paragraph_documents(text)
    return docs, {"text_files": files}


def split_paragraph_documents(text: str, doc_chars: int = TEXT_DOC_CHARS) -> list[str]:
    """Group blank-line separated paragraphs into documents of at least `doc_chars` characters
    (the last one may be shorter); paragraphs keep their inner line breaks."""
    paragraphs = [p.strip("\n") for p in text.replace("\r\n", "\n").split("\n\n")]
    docs, cur, size = [], [], 0
    for p in paragraphs:
        if not p.strip():
            continue
        cur.append(p)
        size += len(p)
        if size >= doc_chars:
            docs.append("\n\n".join(cur))
            cur, size = [], 0
    if cur:
        docs.append("\n\n".join(cur))
    return docs


def _spread_split(docs: list[str], val_docs: int) -> Iterator[tuple[bool, str]]:
    """Every k-th document (k = len // val_docs) is held out, so val covers every file."""
    if len(docs) <= val_docs:
        raise DataError(
            f"data.val_docs: {val_docs} held-out documents but the text files give only {len(docs)}"
        )
    stride = len(docs) // val_docs
    for i, d in enumerate(docs):
        yield (i % stride == stride - 1 and i // stride < val_docs), d


# --- Hugging Face datasets -----------------------------------------------------------------------


def _hf_documents(hf: HFDatasetConfig, written: Mapping[str, Any]) -> tuple[Iterator[str], dict]:
    """The documents of data.hf_dataset (`written`: that section as the config gave it, for
    corpus.json)."""
    import datasets

    kwargs = {"split": hf.split, "streaming": hf.streaming}
    if hf.name:
        kwargs["name"] = hf.name
    if hf.data_files:
        kwargs["data_files"] = hf.data_files if isinstance(hf.data_files, str) else list(hf.data_files)
    field_name = hf.text_field
    log.info("corpus: datasets.load_dataset(%r, %s)", hf.path, kwargs)
    ds = datasets.load_dataset(hf.path, **kwargs)
    max_docs = hf.max_docs

    def texts() -> Iterator[str]:
        n = 0
        for rec in ds:
            if field_name not in rec:
                raise DataError(
                    f"data.hf_dataset.text_field: {field_name!r} is not a field of {hf.path} (fields: {sorted(rec)})"
                )
            text = rec[field_name]
            if not text or not text.strip():
                continue
            yield text
            n += 1
            if max_docs and n >= max_docs:
                return

    return texts(), {"hf_dataset": {**dict(written), "datasets_version": datasets.__version__}}


def _head_split(
    docs: Iterator[str], val_docs: int, max_train_tokens: int | None
) -> Iterator[tuple[bool, str]]:
    """The first val_docs documents are held out (a stream has no end to spread them over)."""
    max_chars = max_train_tokens * MAX_CHARS_PER_TOKEN if max_train_tokens else None
    chars = 0
    for i, d in enumerate(docs):
        if i < val_docs:
            yield True, d
            continue
        yield False, d
        chars += len(d)
        if max_chars and chars >= max_chars:
            return


def read_texts(corpus_dir: str | Path, split: str = "train") -> Iterator[str]:
    """The documents of a split of a built corpus (results/data/corpus/{split}.jsonl)."""
    return iter_jsonl(Path(corpus_dir) / f"{split}.jsonl", "text")


def read_cloze(corpus_dir: str | Path) -> list[dict]:
    """The held-out cloze items: [{"context", "continuation", "kind"}]."""
    return list(iter_jsonl(Path(corpus_dir) / "cloze.jsonl"))

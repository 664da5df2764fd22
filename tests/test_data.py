"""Data stages: synthetic corpus, tokenizer, token shards and the training reader.

Everything runs on a small corpus built once per module (a few seconds on 2 cores); nothing
touches the network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hades.config import SyntheticConfig
from hades.data.corpus import (
    build_corpus,
    expand_text_files,
    read_cloze,
    read_texts,
    split_paragraph_documents,
)
from hades.data.io import DataError
from hades.data.shards import (
    TokenDataset,
    part_path,
    rank_rows,
    shard_max_tokens,
    token_dtype,
    tokenize_corpus,
    tokenize_shard,
    write_manifest,
)
from hades.data.synthetic import Language, generate_document
from hades.data.tokenizer import EOS, build_tokenizer, load_tokenizer
from hades.io import sha256_file

REPO = Path(__file__).resolve().parents[1]
NEOX = Path(__file__).resolve().parents[2] / "shared/data/tokenizers/gpt-neox-20b/tokenizer.json"
SYN = {
    "n_docs": 300,
    "n_words": 200,
    "zipf_exponent": 1.1,
    "recall_fraction": 0.3,
    "doc_words": [30, 120],
}
DATA = {"source": "synthetic", "synthetic": SYN, "val_docs": 40, "num_shards": 3}


def _build(root: Path, seed: int = 7, vocab: int = 400, data=DATA) -> dict[str, Path]:
    corpus, tok, tokens = root / "corpus", root / "tokenizer" / "tokenizer.json", root / "tokens"
    build_corpus(data, corpus, seed=seed)
    build_tokenizer({"kind": "train_bpe", "vocab_size": vocab}, corpus, tok)
    manifest = tokenize_corpus(corpus, tok, tokens, num_shards=data["num_shards"])
    return {"corpus": corpus, "tokenizer": tok, "tokens": tokens, "manifest": manifest}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    return _build(tmp_path_factory.mktemp("data"))


# --- synthetic corpus ----------------------------------------------------------------------------


def test_corpus_deterministic(built, tmp_path):
    build_corpus(DATA, tmp_path / "same", seed=7)
    for name in ("train.jsonl", "val.jsonl", "cloze.jsonl", "corpus.json"):
        assert (tmp_path / "same" / name).read_bytes() == (built["corpus"] / name).read_bytes(), (
            name
        )
    build_corpus(DATA, tmp_path / "other", seed=8)
    assert (tmp_path / "other/train.jsonl").read_bytes() != (
        built["corpus"] / "train.jsonl"
    ).read_bytes()


def test_corpus_manifest(built):
    m = json.loads((built["corpus"] / "corpus.json").read_text())
    assert m["seed"] == 7 and m["source"] == "synthetic" and m["version"]
    assert m["docs"]["train"] == SYN["n_docs"] and m["docs"]["val"] == DATA["val_docs"]
    for name, entry in m["files"].items():
        assert sha256_file(built["corpus"] / name) == entry["sha256"], name
        assert (built["corpus"] / name).stat().st_size == entry["bytes"], name


def test_documents_independent_and_held_out(built):
    cfg = SyntheticConfig.from_mapping(SYN)
    lang = Language(cfg.n_words, cfg.zipf_exponent, 7)
    train = list(read_texts(built["corpus"], "train"))
    assert generate_document(lang, cfg, 7, "train", 5).text == train[5]
    val = set(read_texts(built["corpus"], "val"))
    assert len(val) == DATA["val_docs"] and not val & set(train)


def test_recall_structure(built):
    train = list(read_texts(built["corpus"], "train"))
    fact = re.compile(r"The code of (\w+) is (\d+)\.")
    recall = [t for t in train if fact.search(t) or "The pass key is" in t]
    assert 0.15 < len(recall) / len(train) < 0.45, len(recall)
    for text in recall:
        facts = fact.findall(text)
        if facts:  # every fact is stated, then queried again later with the same value
            assert len(facts) == 2 * len(set(facts)) and len(dict(facts)) == len(set(facts)), text
        else:
            key = re.findall(r"The pass key is (\d+)\.", text)
            assert len(key) == 2 and key[0] == key[1] and "What is the pass key?" in text, text
    assert any("The pass key is" in t for t in recall), "the passkey phrasing occurs"


def test_local_patterns(built):
    cfg = SyntheticConfig.from_mapping(SYN)
    lang = Language(cfg.n_words, cfg.zipf_exponent, 7)
    text = " ".join(read_texts(built["corpus"], "train"))
    words = re.findall(r"\w+", text)
    follow = dict(lang.collocations)
    seen = 0
    for a, b in zip(words, words[1:]):
        if a in follow:
            assert b == follow[a], (a, b)
            seen += 1
    assert seen > 20
    for det_class, dets in enumerate(lang.determiners):  # a determiner agrees with its noun
        nouns = {n for n, c in lang.nouns if c == det_class}
        other = {n for n, c in lang.nouns if c != det_class} - nouns
        for d in dets:
            after = re.findall(rf"\b{d} (?:\w+{lang_adj(det_class)} )?(\w+)", text.lower())
            assert after and not set(after) & other, d


def lang_adj(cls: int) -> str:
    from hades.data.synthetic import ADJ_ENDINGS

    return ADJ_ENDINGS[cls]


def test_cloze_items(built):
    items = read_cloze(built["corpus"])
    assert len(items) >= 0.9 * DATA["val_docs"]
    kinds = {it["kind"] for it in items}
    assert {"recall", "collocation", "counting"} <= kinds
    val = list(read_texts(built["corpus"], "val"))
    for it in items:
        c = it["continuation"]
        assert c.startswith(" ") and len(c.split()) == 1 and not it["context"].endswith(" ")
        assert any(it["context"] + c in t for t in val), "an item is a piece of a held-out document"
        if it["kind"] == "recall" and it["context"].endswith("The pass key is"):
            assert f"The pass key is{c}. Remember it." in it["context"]
        elif it["kind"] == "recall":
            name = it["context"].split()[-2]
            assert f"The code of {name} is{c}." in it["context"], it
        elif it["kind"] == "counting" and c.strip().isdigit():
            assert int(it["context"].split()[-1]) + 1 == int(c)


def test_text_files_source(tmp_path):
    paras = [f"Paragraph {i} " + "word " * 50 for i in range(60)]
    (tmp_path / "a.txt").write_text("\n\n".join(paras[:30]))
    (tmp_path / "b.txt").write_text("\n\n".join(paras[30:]))
    data = {
        "source": "text_files",
        "text_files": [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")],
        "val_docs": 3,
    }
    m = build_corpus(data, tmp_path / "c", seed=0)
    assert m["docs"]["val"] == 3 and m["docs"]["cloze"] == 3 and m["docs"]["train"] > 3
    docs = split_paragraph_documents("\n\n".join(paras[:30]), doc_chars=500)
    assert "\n\n".join(docs) == "\n\n".join(paras[:30]).strip("\n")
    missing = {**data, "text_files": [str(tmp_path / "nope.txt")]}
    with pytest.raises(DataError, match="no such file") as e:
        build_corpus(missing, tmp_path / "d", seed=0)
    assert "\n" not in str(e.value)


def test_text_files_directories_globs_and_jsonl(tmp_path):
    """A directory contributes every .txt/.md/.jsonl below it in path order, a glob its sorted
    matches; a .jsonl file gives one document per line's "text" (the Pile's layout), as is."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    paras = [f"Paragraph {i} " + "word " * 50 for i in range(40)]
    (root / "b.txt").write_text("\n\n".join(paras[:20]))
    (root / "sub" / "a.txt").write_text("\n\n".join(paras[20:]))
    (root / "notes.csv").write_text("not,text\n")  # not a text suffix: skipped
    pile = [{"text": f"Pile document {i}: " + "token " * 40, "meta": {"set": "x"}} for i in range(12)]
    (root / "pile.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pile))
    assert [p.relative_to(root).as_posix() for p in expand_text_files([str(root)])] == [
        "b.txt", "pile.jsonl", "sub/a.txt"
    ]
    assert expand_text_files([str(root / "**" / "*.txt")]) == [root / "b.txt", root / "sub" / "a.txt"]
    m = build_corpus({"source": "text_files", "text_files": [str(root)], "val_docs": 2}, tmp_path / "c", seed=0)
    texts = [json.loads(line)["text"] for f in ("train.jsonl", "val.jsonl") for line in open(tmp_path / "c" / f)]
    assert sum(t.startswith("Pile document") for t in texts) == 12, "each JSONL record is one document"
    assert all(r["text"] in texts for r in pile)
    assert set(m["text_files"]) == {str(root / "b.txt"), str(root / "pile.jsonl"), str(root / "sub" / "a.txt")}
    for entry, msg in ((str(root / "nope"), "no such file"), (str(root / "*.tsv"), "names no"), (str(root / "sub" / "x"), "no such file")):
        with pytest.raises(DataError, match=msg):
            expand_text_files([entry])


def test_hf_dataset_source_local_json(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = tmp_path / "ds" / "train.jsonl"
    src.parent.mkdir()
    src.write_text(
        "".join(
            json.dumps({"content": f"Document {i} says hello to world {i}."}) + "\n"
            for i in range(40)
        )
    )
    hf = {
        "path": "json",
        "data_files": str(src),
        "split": "train",
        "text_field": "content",
        "streaming": True,
        "max_docs": 30,
    }
    m = build_corpus(
        {"source": "hf_dataset", "hf_dataset": hf, "val_docs": 5}, tmp_path / "c", seed=0
    )
    assert m["docs"] == {"train": 25, "val": 5, "cloze": 5}
    assert next(read_texts(tmp_path / "c", "val")) == "Document 0 says hello to world 0."
    assert read_cloze(tmp_path / "c")[0] == {
        "context": "Document 0 says hello to world",
        "continuation": " 0",
        "kind": "last_word",
    }
    with pytest.raises(DataError, match="text_field"):
        build_corpus(
            {"source": "hf_dataset", "hf_dataset": {**hf, "text_field": "text"}, "val_docs": 5},
            tmp_path / "d",
            seed=0,
        )


# --- tokenizer -----------------------------------------------------------------------------------


def test_tokenizer_roundtrip(built, tmp_path):
    tok = load_tokenizer(built["tokenizer"])
    assert tok.convert_tokens_to_ids(EOS) == 0 == tok.eos_token_id and tok.pad_token_id == 0
    assert len(tok) == 400
    for text in [
        *list(read_texts(built["corpus"], "val"))[:5],
        "Héllo, wörld!\n\tTabs  and 世界 ✓ 12345",
    ]:
        ids = tok(text)["input_ids"]
        assert EOS not in tok.convert_ids_to_tokens(ids) and tok.decode(ids) == text
    # same train split -> byte-identical tokenizer
    build_tokenizer({"kind": "train_bpe", "vocab_size": 400}, built["corpus"], tmp_path / "t.json")
    assert (tmp_path / "t.json").read_bytes() == built["tokenizer"].read_bytes()


@pytest.mark.skipif(not NEOX.is_file(), reason="shared GPT-NeoX-20B tokenizer file not present")
def test_gpt_neox_tokenizer_file(tmp_path):
    out = build_tokenizer({"kind": "file", "path": str(NEOX)}, None, tmp_path / "tokenizer.json")
    assert sha256_file(out) == sha256_file(NEOX)
    tok = load_tokenizer(out)
    assert len(tok) == 50277 and tok.eos_token_id == 0 and tok.pad_token == "<|padding|>"
    assert tok.decode(tok("The pass key is 12345.")["input_ids"]) == "The pass key is 12345."
    assert token_dtype(len(tok)) == np.uint16 and token_dtype(70000) == np.uint32
    with pytest.raises(DataError, match="no such tokenizer file"):
        build_tokenizer(
            {"kind": "file", "path": str(tmp_path / "none.json")}, None, tmp_path / "x.json"
        )


# --- shards and manifest -----------------------------------------------------------------------


def _docs_from_tokens(ds: TokenDataset) -> list[np.ndarray]:
    flat = ds.read(0, len(ds))
    cuts = np.flatnonzero(flat == ds.eos_id)
    assert cuts[0] == 0, "every document starts after an EOS"
    return np.split(flat, cuts)[1:]


def test_shard_roundtrip(built):
    tok = load_tokenizer(built["tokenizer"])
    for split in ("train", "val"):
        ds = TokenDataset(built["manifest"], split, verify="hash")
        docs = _docs_from_tokens(ds)
        texts = list(read_texts(built["corpus"], split))
        assert len(docs) == len(texts)
        assert all(tok.decode(d[1:].tolist()) == t for d, t in zip(docs, texts))
    m = json.loads(built["manifest"].read_text())
    assert m["dtype"] == "uint16" and m["eos_id"] == 0 and m["vocab_size"] == 400
    assert (
        m["splits"]["train"]["num_shards"] == 3 and m["splits"]["train"]["n_docs"] == SYN["n_docs"]
    )


def test_max_train_tokens_cap(built, tmp_path):
    assert shard_max_tokens(1000, 3, "train") == 334 and shard_max_tokens(1000, 3, "val") is None
    rec = tokenize_shard(built["corpus"], built["tokenizer"], 0, 3, tmp_path, max_tokens=1000)
    flat = np.fromfile(tmp_path / rec["file"], dtype=np.uint16)
    assert rec["n_tokens"] == flat.size == 1000
    assert rec["n_docs"] == int((flat == 0).sum()), "documents begun within the cap"
    full = TokenDataset(built["manifest"]).read(0, 1000)
    assert np.array_equal(flat, full), "the cap keeps the shard's first tokens"


def test_manifest_cache_and_invalidation(tmp_path):
    p = _build(tmp_path / "a")
    m1 = p["manifest"].read_bytes()
    bins = sorted(p["tokens"].glob("*.bin"))
    mtimes = [b.stat().st_mtime_ns for b in bins]
    # unchanged inputs (a rebuilt corpus and tokenizer with the same bytes): nothing re-tokenised
    build_corpus(DATA, p["corpus"], seed=7)
    rec = tokenize_shard(p["corpus"], p["tokenizer"], 1, 3, p["tokens"])
    assert rec["reused"]
    tokenize_corpus(p["corpus"], p["tokenizer"], p["tokens"], num_shards=3)
    assert p["manifest"].read_bytes() == m1
    assert [b.stat().st_mtime_ns for b in bins] == mtimes
    # a changed corpus: new corpus hashes, new shards, the stale ones removed
    build_corpus(DATA, p["corpus"], seed=9)
    tokenize_corpus(p["corpus"], p["tokenizer"], p["tokens"], num_shards=3)
    m2 = json.loads(p["manifest"].read_text())
    assert m2["corpus"]["files"] != json.loads(m1)["corpus"]["files"]
    assert m2["tokenizer"] == json.loads(m1)["tokenizer"]
    assert not any(b.exists() for b in bins) and len(list(p["tokens"].glob("*.bin"))) == 4
    # a changed tokenizer: new tokenizer hash
    build_tokenizer({"kind": "train_bpe", "vocab_size": 350}, p["corpus"], p["tokenizer"])
    tokenize_corpus(p["corpus"], p["tokenizer"], p["tokens"], num_shards=3)
    m3 = json.loads(p["manifest"].read_text())
    assert m3["tokenizer"]["sha256"] != m2["tokenizer"]["sha256"] and m3["vocab_size"] == 350
    assert m3["corpus"] == m2["corpus"]
    # a shard record from the old tokenizer is refused by the manifest writer
    stale = json.loads(part_path(p["tokens"], "train", 0).read_text())
    stale["tokenizer_sha256"] = m2["tokenizer"]["sha256"]
    part_path(p["tokens"], "train", 0).write_text(json.dumps(stale))
    with pytest.raises(DataError, match="stale shard record"):
        write_manifest(p["tokens"], p["corpus"], p["tokenizer"])


def test_truncated_shard_refused_and_redone(built, tmp_path):
    tokens = tmp_path / "tokens"
    shutil.copytree(built["tokens"], tokens)
    manifest = tokens / "manifest.json"
    shard = tokens / json.loads(manifest.read_text())["splits"]["train"]["shards"][1]["file"]
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="truncated or stale shard") as e:
        TokenDataset(manifest)
    assert "\n" not in str(e.value)
    # the advice forces the shard's own job (tests/test_recovery.py runs it)
    assert f"--forcerun {part_path(tokens, 'train', 1)} --until tokenize`" in str(e.value)
    with pytest.raises(DataError, match="bytes on disk") as e:  # the manifest job's refusal
        write_manifest(tokens, built["corpus"], built["tokenizer"])
    assert f"--forcerun {part_path(tokens, 'train', 1)} --until tokenize`" in str(e.value)
    shard.write_bytes(good[:-2] + b"\xff\xff")  # right size, wrong bytes
    TokenDataset(manifest)  # size check passes
    with pytest.raises(DataError, match="sha256"):
        TokenDataset(manifest, verify="hash")
    rec = tokenize_shard(built["corpus"], built["tokenizer"], 1, 3, tokens)
    assert not rec["reused"] and shard.read_bytes() == good


def test_missing_inputs_one_line_errors(built, tmp_path):
    with pytest.raises(DataError, match="missing corpus manifest") as e:
        tokenize_shard(tmp_path / "nope", built["tokenizer"], 0, 1, tmp_path / "t")
    assert "\n" not in str(e.value)
    corpus = tmp_path / "corpus"
    shutil.copytree(built["corpus"], corpus)
    (corpus / "train.jsonl").unlink()
    with pytest.raises(DataError, match="missing corpus file") as e:
        tokenize_shard(corpus, built["tokenizer"], 0, 1, tmp_path / "t")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="no such file"):
        build_tokenizer({"kind": "train_bpe", "vocab_size": 300}, corpus, tmp_path / "tok.json")
    with pytest.raises(DataError, match="tokenizer.name"):
        build_tokenizer({"kind": "hub"}, None, tmp_path / "hub" / "tokenizer.json")
    with pytest.raises(DataError, match="token manifest"):
        TokenDataset(tmp_path / "none" / "manifest.json")


# --- data order ----------------------------------------------------------------------------------


def test_data_order(built):
    ds, again = TokenDataset(built["manifest"]), TokenDataset(built["manifest"])
    G, T = 8, 64
    full = ds.batch(seed=3, step=11, global_batch=G, seq_len=T)
    assert full.shape == (G, T + 1) and full.dtype == torch.int64
    assert torch.equal(full, again.batch(3, 11, G, T)), "depends only on (seed, step)"
    assert not torch.equal(full, ds.batch(3, 12, G, T)) and not torch.equal(
        full, ds.batch(4, 11, G, T)
    )
    for world in (2, 4, 8):
        parts = [ds.batch(3, 11, G, T, rank=r, world_size=world) for r in range(world)]
        assert torch.equal(torch.cat(parts), full), f"ranks of W={world} tile the global batch"
    starts = ds.global_batch_starts(3, 11, G, T)
    flat = ds.read(0, len(ds))
    for row, s in zip(full, starts.tolist()):  # a window is consecutive tokens, inputs + targets
        assert np.array_equal(row.numpy(), flat[s : s + T + 1])
    assert rank_rows(G, 1, 4) == slice(2, 4)
    # windows may straddle shard boundaries
    edge = ds._offsets[1] - 3
    assert np.array_equal(ds.windows([edge], 8)[0].numpy(), flat[edge : edge + 9])


def test_val_reader(built):
    val = TokenDataset(built["manifest"], "val")
    w = val.eval_windows(64)
    assert w.shape == ((len(val) - 1) // 64, 65)
    assert torch.equal(w[1:, 0], w[:-1, -1]), "consecutive windows share one boundary token"
    assert val.eval_windows(64, max_windows=2).shape == (2, 65)


# --- Snakemake rules -----------------------------------------------------------------------------


@pytest.mark.slow
def test_snakemake_data_rules(tmp_path):
    """The rules of workflow/rules/data.smk end to end on a tiny config, then a no-op rerun."""
    import yaml

    # only the data rules (and the common.smk they build on), so other stages cannot interfere
    for name in (
        "rules/common.smk",
        "rules/data.smk",
        *(f"scripts/{s}.py" for s in ("corpus", "tokenizer", "tokenize")),
    ):
        (tmp_path / "workflow" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "workflow" / name, tmp_path / "workflow" / name)
    # the rules name their env (conda: "../../envs/data.yaml"); Snakemake records its content
    (tmp_path / "envs").mkdir()
    shutil.copy(REPO / "envs" / "data.yaml", tmp_path / "envs" / "data.yaml")
    (tmp_path / "Snakefile").write_text(
        'configfile: "config/config.yaml"\n\n\ninclude: "workflow/rules/common.smk"\n'
        'include: "workflow/rules/data.smk"\n'
    )
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg["data"] = {**DATA, "num_shards": 2}
    cfg["tokenizer"] = {"kind": "train_bpe", "vocab_size": 300}
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "results/data/tokens/manifest.json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    m = json.loads((tmp_path / "results/data/tokens/manifest.json").read_text())
    assert m["splits"]["train"]["num_shards"] == 2 and m["vocab_size"] == 300
    for rule in ("corpus", "tokenizer", "tokenize"):
        assert (tmp_path / f"results/logs/{rule}.log").is_file()
        assert (tmp_path / f"results/benchmarks/{rule}.tsv").is_file()
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert "Nothing to be done" in again.stdout + again.stderr

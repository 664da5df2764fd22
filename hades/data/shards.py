"""Rule `tokenize`: the corpus as memory-mapped token shards, and the reader training uses.

Writing (one Snakemake job per shard, then one that gathers):

    tokenize_shard(corpus, tokenizer, shard_index, num_shards, out_dir, split="train",
                   max_tokens=None) -> record        (also writes out_dir/parts/{split}-{i}.json)
    write_manifest(out_dir, corpus, tokenizer, parts) -> manifest   (out_dir/manifest.json)
    tokenize_corpus(corpus, tokenizer, out_dir, num_shards, max_train_tokens=None) -> Path

A shard is a flat array of token ids (uint16 when the vocabulary has fewer than 65,536 ids,
else uint32); each document is preceded by EOS (<|endoftext|>), so documents are joined with
EOS and every document starts from the same context as at evaluation time, where EOS is the
prefix token (lm-eval's HFLM, passkey, analysis). Shard i of n takes the JSONL lines that *start* in bytes [i*B/n, (i+1)*B/n) of the split
file (B its size): each job reads only its own byte range, so tokenising the Pile spreads over
as many jobs as there are shards.

Caching and reliability. A shard file is named by a key, the hash of everything it depends on
(split, shard index and count, the sha256 of that split's corpus file as recorded in
corpus.json, the sha256 of the tokenizer file, the token cap, dtype and format version). An
unchanged input therefore finds its shard already there (verified against its sidecar's size
and sha256) and is not re-tokenised, even after Snakemake deletes the job's declared output;
a changed corpus or tokenizer gives a new key and a new shard. Every file is written to a
temporary name and renamed; manifest.json is written last and lists each shard's size and
sha256, and the reader refuses a shard whose size (or, on request, hash) disagrees.

Reading (training and evaluation):

    ds = TokenDataset("results/data/tokens/manifest.json", split="train")
    starts = ds.global_batch_starts(seed, step, global_batch, seq_len)  # (global_batch,)
    x = ds.windows(starts[rank * G // W : (rank + 1) * G // W], seq_len)  # (G/W, seq_len + 1)
    x = ds.batch(seed, step, global_batch, seq_len, rank, world_size)     # the same, in one call
    val = TokenDataset(manifest, split="val").eval_windows(seq_len)       # (n, seq_len + 1)

The data of a step depends only on (seed, step): window starts are uniform over the training
tokens, drawn from a generator seeded by a hash of (seed, step). Rank r of W takes rows
[r*G/W, (r+1)*G/W) of the global batch, so the global batch does not depend on the number of
processes, and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from hades.io import atomic_open, sha256_file, sha256_json, write_json

from .io import DataError, read_json
from .tokenizer import load_backend

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
SPLITS = ("train", "val")
MANIFEST = "manifest.json"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < 65536 else np.dtype(np.uint32)


def part_path(out_dir: str | Path, split: str, shard_index: int) -> Path:
    """The per-shard record a Snakemake shard job declares as its output."""
    return Path(out_dir) / "parts" / f"{split}-{shard_index}.json"


def shard_max_tokens(max_train_tokens: int | None, num_shards: int, split: str) -> int | None:
    """The token cap of one training shard (data.max_train_tokens spread evenly); val is uncapped."""
    if split != "train" or not max_train_tokens:
        return None
    return -(-int(max_train_tokens) // num_shards)


def _corpus(corpus: str | Path) -> tuple[Path, dict]:
    """(corpus dir, corpus.json) from the corpus dir or the path of its corpus.json."""
    corpus = Path(corpus)
    manifest = corpus if corpus.suffix == ".json" else corpus / "corpus.json"
    if not manifest.is_file():
        raise DataError(
            f"{manifest}: missing corpus manifest (build it with `snakemake {manifest}`)"
        )
    return manifest.parent, read_json(manifest)


def _split_file(corpus_dir: Path, cm: dict, split: str) -> tuple[Path, dict]:
    name = f"{split}.jsonl"
    path = corpus_dir / name
    if name not in cm["files"]:
        raise DataError(f"{corpus_dir}/corpus.json: lists no {name}")
    entry = cm["files"][name]
    if not path.is_file():
        raise DataError(
            f"{path}: missing corpus file (rebuild with `snakemake --forcerun corpus {corpus_dir}/corpus.json`)"
        )
    if path.stat().st_size != entry["bytes"]:
        raise DataError(
            f"{path}: {path.stat().st_size} bytes but corpus.json says {entry['bytes']}; "
            f"the corpus changed after its manifest was written (rebuild with `snakemake --forcerun corpus`)"
        )
    return path, entry


def _byte_range_docs(path: Path, shard_index: int, num_shards: int) -> Iterator[str]:
    """Texts of the JSONL lines that start in this shard's byte range."""
    size = path.stat().st_size
    lo, hi = size * shard_index // num_shards, size * (shard_index + 1) // num_shards
    with open(path, "rb") as f:
        pos = lo
        if lo > 0:
            f.seek(lo - 1)
            pos = lo - 1 + len(f.readline())  # skip to the first line that starts at >= lo
        while pos < hi:
            line = f.readline()
            if not line:
                break
            pos += len(line)
            if line.strip():
                yield json.loads(line)["text"]


def _batches(it: Iterator[str], n: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _reusable(bin_path: Path, sidecar: Path, key: str) -> dict | None:
    """The sidecar record of an existing, intact shard with this key, else None."""
    if not (bin_path.is_file() and sidecar.is_file()):
        return None
    try:
        rec = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if rec.get("key") != key or bin_path.stat().st_size != rec.get("bytes"):
        return None
    return rec if sha256_file(bin_path) == rec.get("sha256") else None


def tokenize_shard(
    corpus: str | Path,
    tokenizer: str | Path,
    shard_index: int,
    num_shards: int,
    out_dir: str | Path,
    split: str = "train",
    max_tokens: int | None = None,
    batch_docs: int = 256,
) -> dict:
    """Tokenise shard `shard_index` of `num_shards` of one split; return its record.

    Writes out_dir/<split>-<i>-of-<n>.<key>.bin (+ .json sidecar) unless an intact shard with
    the same key exists, then out_dir/parts/<split>-<i>.json. The record has "reused": True
    when nothing was tokenised.
    """
    assert split in SPLITS, f"split must be one of {SPLITS}, got {split!r}"
    assert 0 <= shard_index < num_shards, f"shard_index {shard_index} not in [0, {num_shards})"
    out_dir = Path(out_dir)
    corpus_dir, cm = _corpus(corpus)
    src, entry = _split_file(corpus_dir, cm, split)
    backend, eos, vocab = load_backend(tokenizer)
    dtype = token_dtype(vocab)
    inputs = {
        "version": FORMAT_VERSION,
        "split": split,
        "shard_index": shard_index,
        "num_shards": num_shards,
        "corpus_sha256": entry["sha256"],
        "tokenizer_sha256": sha256_file(tokenizer),
        "max_tokens": max_tokens,
        "dtype": dtype.name,
        "eos_id": eos,
    }
    key = sha256_json(inputs)[:16]
    bin_path = out_dir / f"{split}-{shard_index:05d}-of-{num_shards:05d}.{key}.bin"
    sidecar = bin_path.with_name(bin_path.name + ".json")

    rec = _reusable(bin_path, sidecar, key)
    if rec is not None:
        log.info("tokenize: %s unchanged (key %s), not re-tokenised", bin_path.name, key)
        write_json(part_path(out_dir, split, shard_index), rec)
        return {**rec, "reused": True}

    sha, n_tokens, n_docs = hashlib.sha256(), 0, 0
    with atomic_open(bin_path, "wb") as f:
        for texts in _batches(_byte_range_docs(src, shard_index, num_shards), batch_docs):
            encs = backend.encode_batch_fast(texts, add_special_tokens=False)
            lens = np.array([len(e.ids) + 1 for e in encs], dtype=np.int64)
            arr = np.fromiter(
                (t for e in encs for t in (eos, *e.ids)), dtype=dtype, count=int(lens.sum())
            )
            if max_tokens is not None and n_tokens + arr.size > max_tokens:
                keep = max_tokens - n_tokens
                arr = arr[:keep]
                n_docs += int(
                    np.searchsorted(np.cumsum(lens) - lens, keep, side="left")
                )  # docs begun
            else:
                n_docs += len(texts)
            buf = arr.tobytes()
            f.write(buf)
            sha.update(buf)
            n_tokens += arr.size
            if max_tokens is not None and n_tokens >= max_tokens:
                break
    rec = {
        **inputs,
        "key": key,
        "file": bin_path.name,
        "n_tokens": n_tokens,
        "n_docs": n_docs,
        "bytes": n_tokens * dtype.itemsize,
        "sha256": sha.hexdigest(),
        "vocab_size": vocab,
    }
    write_json(sidecar, rec)
    write_json(part_path(out_dir, split, shard_index), rec)
    log.info("tokenize: %s: %d docs, %d tokens", bin_path.name, n_docs, n_tokens)
    return {**rec, "reused": False}


def write_manifest(
    out_dir: str | Path,
    corpus: str | Path,
    tokenizer: str | Path,
    parts: Sequence[str | Path] | None = None,
) -> dict:
    """Gather the shard records into out_dir/manifest.json (written last, atomically).

    Checks that every split has shards 0..n-1, that each was made from the current corpus and
    tokenizer and is intact on disk; then removes shard files no record refers to (outputs of
    an older corpus or tokenizer).
    """
    out_dir = Path(out_dir)
    corpus_dir, cm = _corpus(corpus)
    tok_sha = sha256_file(tokenizer)
    paths = (
        [Path(p) for p in parts]
        if parts is not None
        else sorted((out_dir / "parts").glob("*.json"))
    )
    records = [read_json(p, "shard record") for p in paths]
    splits = {}
    for split in SPLITS:
        recs = sorted((r for r in records if r["split"] == split), key=lambda r: r["shard_index"])
        if not recs:
            raise DataError(f"{out_dir}: no shard records for split {split!r}")
        n = recs[0]["num_shards"]
        if [r["shard_index"] for r in recs] != list(range(n)) or any(
            r["num_shards"] != n for r in recs
        ):
            raise DataError(
                f"{out_dir}: split {split!r} needs shards 0..{n - 1} of {n}, got {[(r['shard_index'], r['num_shards']) for r in recs]}"
            )
        corpus_sha = cm["files"][f"{split}.jsonl"]["sha256"]
        for r in recs:
            if r["corpus_sha256"] != corpus_sha or r["tokenizer_sha256"] != tok_sha:
                raise DataError(
                    f"{out_dir}/{r['file']}: made from another corpus or tokenizer (stale shard record); rerun the tokenize jobs"
                )
            size = (out_dir / r["file"]).stat().st_size if (out_dir / r["file"]).is_file() else None
            if size != r["bytes"]:
                raise DataError(
                    f"{out_dir}/{r['file']}: {size} bytes on disk, its record says {r['bytes']}; "
                    f"rebuild it with `snakemake --cores all --forcerun "
                    f"{part_path(out_dir, split, r['shard_index'])} --until tokenize`"
                )
        splits[split] = {
            "n_tokens": sum(r["n_tokens"] for r in recs),
            "n_docs": sum(r["n_docs"] for r in recs),
            "num_shards": n,
            "shards": [
                {k: r[k] for k in ("file", "n_tokens", "n_docs", "bytes", "sha256")} for r in recs
            ],
        }
    first = records[0]
    if len({(r["dtype"], r["eos_id"], r["vocab_size"]) for r in records}) != 1:
        raise DataError(f"{out_dir}: shard records disagree on dtype/eos/vocab")
    manifest = {
        "version": FORMAT_VERSION,
        "dtype": first["dtype"],
        "vocab_size": first["vocab_size"],
        "eos_id": first["eos_id"],
        "tokenizer": {"path": str(tokenizer), "sha256": tok_sha},
        "corpus": {
            "path": str(corpus_dir),
            "manifest_sha256": sha256_file(corpus_dir / "corpus.json"),
            "files": {f"{s}.jsonl": cm["files"][f"{s}.jsonl"]["sha256"] for s in SPLITS},
        },
        "splits": splits,
    }
    keep = {s["file"] for sp in splits.values() for s in sp["shards"]}
    for f in out_dir.glob("*.bin"):
        if f.name not in keep:
            log.info("tokenize: removing stale shard %s", f.name)
            f.unlink(missing_ok=True)
            f.with_name(f.name + ".json").unlink(missing_ok=True)
    write_json(out_dir / MANIFEST, manifest)
    log.info("tokenize: manifest %s", json.dumps({s: v["n_tokens"] for s, v in splits.items()}))
    return manifest


def tokenize_corpus(
    corpus: str | Path,
    tokenizer: str | Path,
    out_dir: str | Path,
    num_shards: int,
    max_train_tokens: int | None = None,
) -> Path:
    """Every shard of both splits, one after the other, then the manifest (no Snakemake)."""
    parts = []
    for split, n in (("train", num_shards), ("val", 1)):
        for i in range(n):
            tokenize_shard(
                corpus,
                tokenizer,
                i,
                n,
                out_dir,
                split,
                shard_max_tokens(max_train_tokens, n, split),
            )
            parts.append(part_path(out_dir, split, i))
    write_manifest(out_dir, corpus, tokenizer, parts)
    return Path(out_dir) / MANIFEST


# --- reading -----------------------------------------------------------------------------------


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator seeded by a hash of (seed, step): neighbouring steps are unrelated."""
    import torch  # here, not at the top: the tokenize jobs never need torch (a slow import)

    h = hashlib.sha256(f"hades-data:{seed}:{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))


def rank_rows(global_batch: int, rank: int, world_size: int) -> slice:
    """Rows [rank*G/W, (rank+1)*G/W) of the global batch that rank `rank` of W trains on."""
    assert global_batch % world_size == 0, (
        f"global_batch {global_batch} must divide by world size {world_size}"
    )
    assert 0 <= rank < world_size, f"rank {rank} not in [0, {world_size})"
    per = global_batch // world_size
    return slice(rank * per, (rank + 1) * per)


class TokenDataset:
    """The tokens of one split (manifest.json + shards), read through np.memmap.

    verify: "size" (default) checks every shard's size against the manifest; "hash" also
    checks its sha256 (reads every byte once). A mismatch is a one-line DataError.
    """

    def __init__(self, manifest_path: str | Path, split: str = "train", verify: str = "size"):
        assert verify in ("size", "hash"), f"verify must be 'size' or 'hash', got {verify!r}"
        self.manifest_path = Path(manifest_path)
        m = read_json(
            self.manifest_path,
            "token manifest (build it with `snakemake results/data/tokens/manifest.json`)",
        )
        if split not in m["splits"]:
            raise DataError(f"{self.manifest_path}: no split {split!r} (has {sorted(m['splits'])})")
        self.split = split
        self.manifest = m
        self.dtype = np.dtype(m["dtype"])
        self.vocab_size: int = m["vocab_size"]
        self.eos_id: int = m["eos_id"]
        self._arrays: list[np.ndarray] = []
        self._offsets: list[int] = []  # global offset of each shard's first token
        n = 0
        for i, s in enumerate(m["splits"][split]["shards"]):
            path = self.manifest_path.parent / s["file"]
            # `--forcerun tokenize` would rerun only the manifest job, which refuses the same
            # shard and leaves no manifest; forcing the shard's own job (its record, a declared
            # output) rebuilds the shard, then the manifest
            repair = (
                f"rebuild it with `snakemake --cores all --forcerun "
                f"{part_path(self.manifest_path.parent, split, i)} --until tokenize`"
            )
            if not path.is_file():
                raise DataError(f"{path}: shard listed in {self.manifest_path} is missing; {repair}")
            size = path.stat().st_size
            if size != s["bytes"]:
                raise DataError(
                    f"{path}: {size} bytes but {self.manifest_path.name} says {s['bytes']} "
                    f"(truncated or stale shard); {repair}"
                )
            if verify == "hash" and sha256_file(path) != s["sha256"]:
                raise DataError(
                    f"{path}: sha256 differs from {self.manifest_path.name} (corrupted shard); {repair}"
                )
            if s["n_tokens"] == 0:
                continue
            self._arrays.append(np.memmap(path, dtype=self.dtype, mode="r", shape=(s["n_tokens"],)))
            self._offsets.append(n)
            n += s["n_tokens"]
        self.n_tokens = n

    def __len__(self) -> int:
        return self.n_tokens

    def token_counts(self) -> np.ndarray:
        """How often each token id occurs in the split: (vocab_size,) int64, one pass per shard."""
        counts = np.zeros(self.vocab_size, dtype=np.int64)
        for arr in self._arrays:
            counts += np.bincount(np.asarray(arr), minlength=self.vocab_size)[: self.vocab_size]
        return counts

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the split, across shard boundaries; (length,) int64."""
        assert 0 <= start and start + length <= self.n_tokens, (
            f"read [{start}, {start + length}) outside the {self.n_tokens} tokens of split {self.split!r}"
        )
        out = np.empty(length, dtype=np.int64)
        i = bisect.bisect_right(self._offsets, start) - 1
        pos, done = start - self._offsets[i], 0
        while done < length:
            chunk = self._arrays[i][pos : pos + length - done]
            out[done : done + chunk.size] = chunk
            done += chunk.size
            i, pos = i + 1, 0
        return out

    def global_batch_starts(
        self, seed: int, step: int, global_batch: int, seq_len: int
    ) -> torch.Tensor:
        """Window start offsets of the whole global batch of `step`: (global_batch,) int64,
        uniform over [0, n_tokens - seq_len - 1], from a generator seeded by (seed, step)."""
        import torch

        high = self.n_tokens - seq_len  # a window holds seq_len + 1 tokens (inputs and targets)
        if high <= 0:
            raise DataError(
                f"{self.manifest_path}: split {self.split!r} has {self.n_tokens} tokens, fewer than seq_len + 1 = {seq_len + 1}"
            )
        return torch.randint(0, high, (global_batch,), generator=step_generator(seed, step))

    def windows(self, starts: torch.Tensor | Sequence[int], seq_len: int) -> torch.Tensor:
        """(n, seq_len + 1) int64: row i = tokens [starts[i], starts[i] + seq_len]; inputs are
        [:, :-1] and next-token targets [:, 1:]."""
        import torch

        starts = starts.tolist() if isinstance(starts, torch.Tensor) else list(starts)
        out = np.empty((len(starts), seq_len + 1), dtype=np.int64)
        for row, s in enumerate(starts):
            out[row] = self.read(int(s), seq_len + 1)
        return torch.from_numpy(out)

    def batch(
        self,
        seed: int,
        step: int,
        global_batch: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> torch.Tensor:
        """This rank's rows of the global batch of `step`: (global_batch // world_size, seq_len + 1)."""
        starts = self.global_batch_starts(seed, step, global_batch, seq_len)
        return self.windows(starts[rank_rows(global_batch, rank, world_size)], seq_len)

    def eval_windows(self, seq_len: int, max_windows: int | None = None) -> torch.Tensor:
        """Consecutive windows from token 0 with stride seq_len (every token is a target once):
        (n, seq_len + 1) int64, n = (n_tokens - 1) // seq_len, at most max_windows."""
        n = (self.n_tokens - 1) // seq_len
        if n == 0:
            raise DataError(
                f"{self.manifest_path}: split {self.split!r} has {self.n_tokens} tokens, fewer than seq_len + 1 = {seq_len + 1}"
            )
        if max_windows is not None:
            n = min(n, max_windows)
        return self.windows([i * seq_len for i in range(n)], seq_len)

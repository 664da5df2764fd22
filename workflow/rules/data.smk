# Data stages: corpus -> tokenizer -> tokenize (one job per shard, then the manifest).
# Each script is a thin call of hades.data (corpus.build_corpus, tokenizer.build_tokenizer,
# shards.tokenize_shard / shards.write_manifest); the layout is docs/CONTRACTS.md's.
#
# Params carry hashes of exactly the config each rule reads, so the `params` rerun trigger
# reruns a stage when its config changes: the corpus on data.* (but not num_shards) and the
# seed, the tokenizer on tokenizer.*, the shard jobs on num_shards / max_train_tokens. A
# re-run shard job whose corpus and tokenizer bytes are unchanged reuses its shard file
# (hades/data/shards.py, "Caching and reliability") instead of tokenising again.

from hades.data.io import sha256_file  # stdlib only: parsing stays fast (no torch)

DATA_NUM_SHARDS = int(CFG.data.get("num_shards", 1))
TOKEN_PART = res("data", "tokens", "parts", "{split}-{shard}.json")


def data_token_parts():
    """The per-shard records the manifest gathers: num_shards train shards, one val shard."""
    return expand(TOKEN_PART, split="train", shard=range(DATA_NUM_SHARDS)) + expand(
        TOKEN_PART, split="val", shard=[0]
    )


def data_corpus_sources(wildcards):
    """Local files the corpus reads (data.source text_files), so an edited file reruns it."""
    if CFG.data["source"] == "text_files":
        return list(CFG.data.get("text_files") or [])
    return []


def data_tokenizer_inputs(wildcards):
    """train_bpe learns from the train split; file and hub do not read the corpus."""
    if CFG.tokenizer["kind"] == "train_bpe":
        return {"train": f"{CORPUS_DIR}/train.jsonl"}
    return {}


def data_tokenizer_source():
    """sha256 of tokenizer.path (kind file), a param rather than an input so that a dry run of
    the paper config works before the file is in place (the job then fails with a clear error).
    """
    path = CFG.tokenizer.get("path")
    if CFG.tokenizer["kind"] == "file" and path and os.path.isfile(path):
        return sha256_file(path)
    return None


def data_shard_count(wildcards):
    return DATA_NUM_SHARDS if wildcards.split == "train" else 1


rule corpus:
    input:
        data_corpus_sources,
    output:
        train=f"{CORPUS_DIR}/train.jsonl",
        val=f"{CORPUS_DIR}/val.jsonl",
        cloze=f"{CORPUS_DIR}/cloze.jsonl",
        manifest=f"{CORPUS_DIR}/corpus.json",
    log:
        log_path("corpus"),
    benchmark:
        bench_path("corpus")
    params:
        cfg=config_hash({k: v for k, v in CFG.data.items() if k != "num_shards"}),
        seed=CFG.seed,
    script:
        "../scripts/corpus.py"


rule tokenizer:
    input:
        unpack(data_tokenizer_inputs),
    output:
        TOKENIZER,
    log:
        log_path("tokenizer"),
    benchmark:
        bench_path("tokenizer")
    params:
        cfg=cfg_hash("tokenizer"),
        source_sha256=data_tokenizer_source(),
    script:
        "../scripts/tokenizer.py"


rule tokenize_shard:
    input:
        corpus=f"{CORPUS_DIR}/corpus.json",
        split=f"{CORPUS_DIR}/{{split}}.jsonl",
        tokenizer=TOKENIZER,
    output:
        TOKEN_PART,
    log:
        log_path("tokenize_shard", "{split}", "{shard}"),
    benchmark:
        bench_path("tokenize_shard", "{split}", "{shard}")
    wildcard_constraints:
        split="train|val",
        shard=r"\d+",
    threads: 1
    params:
        num_shards=data_shard_count,
        max_train_tokens=CFG.data.get("max_train_tokens"),
    script:
        "../scripts/tokenize.py"


rule tokenize:
    input:
        parts=data_token_parts(),
        corpus=f"{CORPUS_DIR}/corpus.json",
        tokenizer=TOKENIZER,
    output:
        TOKENS_MANIFEST,
    log:
        log_path("tokenize"),
    benchmark:
        bench_path("tokenize")
    script:
        "../scripts/tokenize.py"

# Data stages: corpus -> tokenizer -> tokenize (one job per shard, then the manifest).
# Each script is a thin call of hades.data (corpus.build_corpus, tokenizer.build_tokenizer,
# shards.tokenize_shard / shards.write_manifest); the layout is docs/CONTRACTS.md's.
#
# Params carry hashes of exactly the config each rule reads, so the `params` rerun trigger
# reruns a stage when its config changes: the corpus on data.* (but not num_shards) and the
# seed, the tokenizer on tokenizer.*, the shard jobs on num_shards / max_train_tokens. A
# re-run shard job whose corpus and tokenizer bytes are unchanged reuses its shard file
# (hades/data/shards.py, "Caching and reliability") instead of tokenising again.
# Its input functions live in common.smk (snakemake --lint: no functions beside rules).


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
    conda:
        "../../envs/data.yaml"
    params:
        cfg=config_hash(
            {k: v for k, v in CFG.raw_section("data").items() if k != "num_shards"}
        ),
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
    conda:
        "../../envs/data.yaml"
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
    conda:
        "../../envs/data.yaml"
    threads: 1
    params:
        num_shards=data_shard_count,
        max_train_tokens=CFG.data.max_train_tokens,
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
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/tokenize.py"

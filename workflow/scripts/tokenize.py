"""Rules `tokenize_shard` and `tokenize` (workflow/rules/data.smk):
hades.data.shards.tokenize_shard for one shard, hades.data.shards.write_manifest to gather them."""

import os
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
# the Rust tokenizer's thread pool reads this once, before its first batch
os.environ.setdefault("RAYON_NUM_THREADS", str(sm.threads))

from hades.data.shards import shard_max_tokens, tokenize_shard, write_manifest  # noqa: E402
from hades.rulelog import rule_log  # noqa: E402

with rule_log(sm, sm.rule):
    if sm.rule == "tokenize_shard":
        tokenize_shard(
            corpus=sm.input.corpus,
            tokenizer=sm.input.tokenizer,
            shard_index=int(sm.wildcards.shard),
            num_shards=sm.params.num_shards,
            out_dir=Path(sm.output[0]).parent.parent,  # <tokens>/parts/<split>-<i>.json
            split=sm.wildcards.split,
            max_tokens=shard_max_tokens(
                sm.params.max_train_tokens, sm.params.num_shards, sm.wildcards.split
            ),
        )
    else:
        write_manifest(
            Path(sm.output[0]).parent, sm.input.corpus, sm.input.tokenizer, sm.input.parts
        )

"""Rule `tokenizer` (workflow/rules/data.smk): hades.data.tokenizer.build_tokenizer."""

from pathlib import Path

from hades.config import load_config
from hades.data.tokenizer import build_tokenizer
from hades.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "tokenizer"):
    cfg = load_config(sm.config)
    corpus_dir = Path(sm.input.train).parent if "train" in sm.input.keys() else None
    build_tokenizer(cfg.tokenizer, corpus_dir, sm.output[0])

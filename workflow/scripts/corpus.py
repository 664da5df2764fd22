"""Rule `corpus` (workflow/rules/data.smk): hades.data.corpus.build_corpus."""

from pathlib import Path

from hades.config import load_config
from hades.data.corpus import build_corpus
from hades.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "corpus"):
    cfg = load_config(sm.config)
    build_corpus(cfg.raw_section("data"), Path(sm.output.manifest).parent, seed=cfg.seed)

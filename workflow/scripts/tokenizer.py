"""Rule `tokenizer` (workflow/rules/data.smk): hades.data.tokenizer.build_tokenizer."""

import logging
from pathlib import Path

from hades.config import load_config
from hades.data.tokenizer import build_tokenizer

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
logging.basicConfig(
    filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
try:
    cfg = load_config(sm.config)
    corpus_dir = Path(sm.input.train).parent if "train" in sm.input.keys() else None
    build_tokenizer(cfg.tokenizer, corpus_dir, sm.output[0])
except Exception:
    logging.exception("rule tokenizer failed")
    raise

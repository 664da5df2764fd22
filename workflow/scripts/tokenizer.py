"""Rule `tokenizer` (workflow/rules/data.smk): hades.data.tokenizer.build_tokenizer."""

import logging

from hades.config import load_config
from hades.data.tokenizer import build_tokenizer

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
logging.basicConfig(
    filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
try:
    cfg = load_config(sm.config)
    build_tokenizer(cfg.tokenizer, sm.params.corpus_dir, sm.output[0])
except Exception:
    logging.exception("rule tokenizer failed")
    raise

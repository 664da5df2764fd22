"""Rule `corpus` (workflow/rules/data.smk): hades.data.corpus.build_corpus."""

import logging
from pathlib import Path

from hades.config import load_config
from hades.data.corpus import build_corpus

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
logging.basicConfig(
    filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
try:
    cfg = load_config(sm.config)
    build_corpus(cfg.raw_section("data"), Path(sm.output.manifest).parent, seed=cfg.seed)
except Exception:
    logging.exception("rule corpus failed")
    raise

"""Rule `tables` (workflow/rules/eval.smk): hades.eval.tables.make_tables."""

import logging
from pathlib import Path

from hades.config import load_config
from hades.eval.tables import make_tables

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
logging.basicConfig(
    filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
try:
    written = make_tables(load_config(sm.config), list(sm.input), Path(sm.output[0]).parent)
    logging.info("wrote %s", ", ".join(map(str, written)))
except Exception:
    logging.exception("rule tables failed")
    raise

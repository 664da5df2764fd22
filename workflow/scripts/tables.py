"""Rule `tables` (workflow/rules/eval.smk): hades.eval.tables.make_tables."""

import logging
from pathlib import Path

from hades.config import load_config
from hades.eval.tables import make_tables
from hades.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "tables"):
    written = make_tables(load_config(sm.config), list(sm.input), Path(sm.output[0]).parent)
    logging.info("wrote %s", ", ".join(map(str, written)))

"""Rule `figures` (workflow/rules/analysis.smk): hades.analysis.summary.write_index."""

import logging

from hades.analysis import summary

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
logging.basicConfig(
    filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
try:
    summary.write_index(sm.input, sm.output[0])
except Exception:
    logging.exception("rule figures failed")
    raise

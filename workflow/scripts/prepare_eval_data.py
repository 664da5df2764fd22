"""Rule `prepare_eval_data` (workflow/rules/eval.smk): hades.eval.prepare.prepare_eval_data."""

import logging
import sys

from hades.eval.prepare import PrepareError, prepare_eval_data

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
logging.basicConfig(
    filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
try:
    meta = prepare_eval_data(sm.wildcards.task, sm.params.src, sm.output[0])
    logging.info("%s: %d records (%s) from %s", meta["task"], meta["records"], meta["layout"], meta["source"])
except PrepareError as e:
    logging.error("rule prepare_eval_data: %s", e)
    sys.exit(f"error: prepare_eval_data: {e}")
except Exception:
    logging.exception("rule prepare_eval_data failed")
    raise

"""Rule `prepare_eval_data` (workflow/rules/eval.smk): hades.eval.prepare.prepare_eval_data."""

import logging

from hades.eval.prepare import PrepareError, prepare_eval_data
from hades.rulelog import one_line_errors, rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "prepare_eval_data"), one_line_errors("prepare_eval_data", (PrepareError,)):
    meta = prepare_eval_data(sm.wildcards.task, sm.params.src, sm.output[0])
    logging.info("%s: %d records (%s) from %s", meta["task"], meta["records"], meta["layout"], meta["source"])

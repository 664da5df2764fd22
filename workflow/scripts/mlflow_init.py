"""Rule `mlflow_init` (workflow/rules/train.smk): hades.tracking.init_store."""

import logging

from hades.config import load_config
from hades.rulelog import rule_log
from hades.tracking import describe_failure, init_store

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
cfg = load_config(sm.config)
# the traceback (SQLAlchemy's, 100+ lines) goes to the rule's log; the console gets one line
# naming the store, what is wrong with it and the fix
with rule_log(
    sm, "mlflow_init", exit_with=lambda e: f"mlflow_init: {describe_failure(cfg.tracking_uri, e)}"
):
    info = init_store(cfg)
    logging.info("MLflow store %s, experiment %s (id %s)", info["tracking_uri"], info["experiment"], info["experiment_id"])

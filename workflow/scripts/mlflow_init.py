"""Rule `mlflow_init` (workflow/rules/train.smk): hades.tracking.init_store."""

import logging
import sys

from hades.config import load_config
from hades.tracking import describe_failure, init_store

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
logging.basicConfig(
    filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
cfg = load_config(sm.config)
try:
    info = init_store(cfg)
    logging.info("MLflow store %s, experiment %s (id %s)", info["tracking_uri"], info["experiment"], info["experiment_id"])
except Exception as e:
    # the traceback (SQLAlchemy's, 100+ lines) goes to the rule's log; the console gets one line
    # naming the store, what is wrong with it and the fix
    logging.exception("rule mlflow_init failed")
    sys.exit(f"error: mlflow_init: {describe_failure(cfg.tracking_uri, e)}")

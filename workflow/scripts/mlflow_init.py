"""Rule `mlflow_init` (workflow/rules/train.smk): hades.tracking.init_store."""

import logging

from hades.config import load_config
from hades.tracking import init_store

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
logging.basicConfig(
    filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
try:
    info = init_store(load_config(sm.config))
    logging.info("MLflow store %s, experiment %s (id %s)", info["tracking_uri"], info["experiment"], info["experiment_id"])
except Exception:
    logging.exception("rule mlflow_init failed")
    raise

"""Rule `passkey` (workflow/rules/eval.smk): hades.eval.passkey.passkey_checkpoint."""

import logging
import sys

from hades.config import load_config

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
logging.basicConfig(
    filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
try:
    import torch

    from hades.eval.passkey import PasskeyError, passkey_checkpoint
    from hades.models import CheckpointMismatchError

    torch.set_num_threads(max(1, sm.threads))
    try:
        passkey_checkpoint(
            sm.input.checkpoint, load_config(sm.config), sm.wildcards.model, sm.output.csv
        )
    except (PasskeyError, CheckpointMismatchError) as e:
        logging.error("rule passkey: %s", e)
        sys.exit(f"error: passkey {sm.wildcards.model}: {e}")
except Exception:
    logging.exception("rule passkey failed")
    raise

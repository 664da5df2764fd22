"""Rule `spectrum` (workflow/rules/analysis.smk): hades.analysis.spectrum.from_config (Figure 2)."""

import logging

from hades.analysis import spectrum
from hades.config import load_config

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
logging.basicConfig(
    filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
try:
    spectrum.from_config(
        load_config(sm.config),
        sm.wildcards.model,
        sm.input.checkpoint,
        sm.input.val,
        sm.output.json,
        [sm.output.png, sm.output.pdf],
    )
except Exception:
    logging.exception("rule spectrum failed")
    raise

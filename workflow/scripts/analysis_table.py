"""Rule `analysis_table` (workflow/rules/analysis.smk): hades.analysis.summary.analysis_rows."""

import logging
from pathlib import Path

from hades.analysis import summary
from hades.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "analysis_table"):
    rows = summary.analysis_rows(
        dict(zip(sm.params.models, sm.input.spectrum)),
        dict(zip(sm.params.models, sm.input.delta)),
        sm.params.labels,
    )
    summary.write_table(
        rows,
        Path(sm.output.csv).with_suffix(""),
        "Spectral analysis (Figures 2 and 4)",
        summary.ANALYSIS_HEADERS,
    )
    logging.info("analysis table: %s", rows)

"""Rule `table_html` (workflow/rules/analysis.smk): hades.analysis.summary.csv_to_html."""

import logging

from hades.analysis import summary

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
logging.basicConfig(
    filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
try:
    titles = {
        "table1": "Table 1: language modelling and zero-shot accuracy",
        "table2": "Table 2: ablations",
    }
    summary.csv_to_html(
        sm.input[0], sm.output[0], titles.get(sm.wildcards.table, sm.wildcards.table)
    )
except Exception:
    logging.exception("rule table_html failed")
    raise

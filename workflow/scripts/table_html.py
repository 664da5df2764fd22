"""Rule `table_html` (workflow/rules/analysis.smk): hades.analysis.summary.csv_to_html."""

from hades.analysis import summary
from hades.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "table_html"):
    titles = {
        "table1": "Table 1: language modelling and zero-shot accuracy",
        "table2": "Table 2: ablations",
    }
    summary.csv_to_html(
        sm.input[0], sm.output[0], titles.get(sm.wildcards.table, sm.wildcards.table)
    )

"""Rule `figures` (workflow/rules/analysis.smk): hades.analysis.summary.write_index."""

from hades.analysis import summary
from hades.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "figures"):
    summary.write_index(sm.input, sm.output[0])

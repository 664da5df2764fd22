"""Rule `curves` (workflow/rules/analysis.smk): hades.analysis.curves (training curves, table)."""

import logging
from pathlib import Path

from hades.analysis import curves, style, summary
from hades.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "curves"):
    # read_run reads the metrics.jsonl and summary.json of results/train/{model}/
    runs = {
        m: curves.read_run(Path(p).parent, m) for m, p in zip(sm.params.models, sm.input.summaries)
    }
    labels = sm.params.labels
    style.save_figure(curves.plot_loss(runs, labels), sm.output.loss_png, sm.output.loss_pdf)
    style.save_figure(curves.plot_aux(runs, labels), sm.output.aux_png, sm.output.aux_pdf)
    rows = curves.efficiency_rows(runs, labels)
    summary.write_table(
        rows,
        Path(sm.output.csv).with_suffix(""),
        "Parameters and throughput",
        curves.EFFICIENCY_HEADERS,
    )
    logging.info("efficiency table: %d models", len(rows))

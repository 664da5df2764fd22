"""Rule `passkey_figure` (workflow/rules/analysis.smk): hades.analysis.passkey_figure (Figure 3)."""

import logging

from hades.analysis import passkey_figure, style
from hades.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "passkey_figure"):
    grids = {m: passkey_figure.read_passkey(p) for m, p in zip(sm.params.models, sm.input.csvs)}
    fig = passkey_figure.plot(grids, labels=sm.params.labels)
    style.save_figure(fig, sm.output.png, sm.output.pdf)
    for m, g in grids.items():
        logging.info("%s: mean passkey accuracy %.3f", m, g.mean_accuracy)

"""Rule `study_table` (workflow/rules/analysis.smk): hades.analysis.study (did every model
learn; clipping and the balance loss during training)."""

import json
import logging
from pathlib import Path

from hades.analysis import study, summary
from hades.io import write_json
from hades.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "study_table"):
    models = sm.params.models
    result = study.study(
        sm.input.manifest,
        dict(zip(models, sm.input.summaries)),
        dict(zip(models, sm.input.metrics)),
        dict(zip(models, sm.input.evals)),
        sm.params.grad_clips,
        sm.params.labels,
    )
    write_json(sm.output.json, result)
    b = result["baselines"]
    title = (
        f"Training and validation (unigram entropy H₁ = {b['unigram_entropy']:.3f} nats/token; "
        f"unigram model on the held-out documents: {b['unigram_val_ce']:.3f})"
    )
    summary.write_table(
        study.study_rows(result), Path(sm.output.csv).with_suffix(""), title, study.STUDY_HEADERS
    )
    logging.info("study: %s", json.dumps(result["baselines"]))

"""Rule `lm_eval` (workflow/rules/eval.smk): hades.eval.harness.evaluate_checkpoint."""

import os

from hades.config import ConfigError, load_config
from hades.rulelog import one_line_errors, rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "lm_eval"):
    cfg = load_config(sm.config)
    if cfg.eval.offline:  # before `datasets` is imported: it reads these once
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from hades.eval.harness import evaluate_checkpoint
    from hades.eval.taskspec import EvalTaskError, default_local_data
    from hades.models import CheckpointMismatchError

    torch.set_num_threads(max(1, sm.threads))
    ev = cfg.eval
    with one_line_errors(
        "lm_eval",
        (EvalTaskError, ConfigError, CheckpointMismatchError),
        f"lm_eval {sm.wildcards.model}",
    ):
        evaluate_checkpoint(
            sm.input.checkpoint,
            list(ev.tasks),
            default_local_data(cfg),
            ev.batch_size,
            ev.max_length,
            ev.limit,
            sm.output[0],
            cfg=cfg,
            grid_id=sm.wildcards.model,
        )

"""Rule `delta_hist` (workflow/rules/analysis.smk): hades.analysis.delta.from_config (Figure 4)."""

from hades.analysis import delta
from hades.config import load_config
from hades.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "delta_hist"):
    cfg, out = load_config(sm.config), sm.output
    model, ckpt, val = sm.wildcards.model, sm.input.checkpoint, sm.input.val
    delta.from_config(cfg, model, ckpt, val, out.json, [out.png, out.pdf])

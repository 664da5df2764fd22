"""Rule `spectrum` (workflow/rules/analysis.smk): hades.analysis.spectrum.from_config (Figure 2)."""

from hades.analysis import spectrum
from hades.config import load_config
from hades.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "spectrum"):
    cfg, out = load_config(sm.config), sm.output
    model, ckpt, val = sm.wildcards.model, sm.input.checkpoint, sm.input.val
    spectrum.from_config(cfg, model, ckpt, val, out.json, [out.png, out.pdf])

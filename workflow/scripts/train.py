"""Rule `train` (workflow/rules/train.smk): hades.train.launch.rule_train, which says how the
trainer is launched (in process, torchrun, its own Slurm step), where it logs and what its exit
statuses mean (75 preempted, 73 locked, 3 diverged, 2 config error)."""

import sys

from hades.train.launch import rule_train

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
sys.exit(rule_train(sm.config, sm.wildcards.model, sm.log[0], sm.resources))

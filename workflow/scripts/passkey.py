"""Rule `passkey` (workflow/rules/eval.smk): hades.eval.passkey.passkey_checkpoint."""

from hades.config import load_config
from hades.rulelog import one_line_errors, rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
with rule_log(sm, "passkey"):
    import torch

    from hades.eval.passkey import PasskeyError, passkey_checkpoint
    from hades.models import CheckpointMismatchError

    torch.set_num_threads(max(1, sm.threads))
    with one_line_errors(
        "passkey", (PasskeyError, CheckpointMismatchError), f"passkey {sm.wildcards.model}"
    ):
        passkey_checkpoint(
            sm.input.checkpoint, load_config(sm.config), sm.wildcards.model, sm.output.csv
        )

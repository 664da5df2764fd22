# HADES reproduction pipeline: data -> tokenizer -> training of the grid -> lm-eval, passkey,
# analysis -> tables, figures, report. This file only wires; the rules live in workflow/rules/.
#
#   snakemake --cores all                                        # default toy study (CPU, offline)
#   snakemake --cores all --profile slurm --configfile config/paper.yaml   # the paper, on Slurm


# `--configfile X` replaces the default study rather than merging into it (Snakemake's default
# merge would leave toy-only keys, e.g. the synthetic corpus, inside the paper config).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


# validates the config (hades.config) at parse time, before any job starts
include: "workflow/rules/common.smk"


# stages not merged yet are skipped until their rule file lands (integration in progress)
for _stage in ("data", "train", "eval", "analysis"):
    if os.path.exists(
        os.path.join(workflow.basedir, "workflow", "rules", f"{_stage}.smk")
    ):

        include: f"workflow/rules/{_stage}.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        final_outputs,

# HADES reproduction pipeline: data -> tokenizer -> training of the grid -> lm-eval, passkey,
# analysis -> tables, figures, report. This file only wires; the rules live in workflow/rules/.
#
#   snakemake --cores all                                        # default toy study (CPU, offline)
#   snakemake --cores all --profile slurm --configfile config/paper.yaml   # the paper, on Slurm


# `--configfile X` replaces the default study rather than merging into it (Snakemake's default
# merge would leave toy-only keys, e.g. the synthetic corpus, inside the paper config).
# The path is the Snakefile's, not the working directory's (Snakemake's default for a relative
# path), so that `--directory DIR` runs the default study with its results under DIR.
if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


# The conda envs' post-deploy scripts (envs/*.post-deploy.sh) install this repository: Snakemake
# runs copies of them from the working directory, so they find it through this variable. Set
# here, not read (the linter's envvars rule is for variables the user must supply).
os.environ.update(HADES_REPO_ROOT=workflow.basedir)


# validates the config (hades.config) at parse time, before any job starts
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/analysis.smk"


# Each stage's rules run in the pinned environment of their stage (envs/<stage>.yaml, used with
# `--sdm conda`) unless a rule names its own `conda:`.
for _rule in workflow.rules:
    _stage = os.path.splitext(os.path.basename(_rule.snakefile))[0]
    if _rule.conda_env is None and os.path.exists(
        f"{workflow.basedir}/envs/{_stage}.yaml"
    ):
        _rule.conda_env = f"../../envs/{_stage}.yaml"


report: "workflow/report/workflow.rst"


localrules:
    all,


rule all:
    default_target: True
    input:
        final_outputs,

# HADES reproduction pipeline: data -> tokenizer -> training of the grid -> lm-eval, passkey,
# analysis -> tables, figures, report. This file only wires; the rules live in workflow/rules/.
#
#   snakemake --cores all                                        # default toy study (CPU, offline)
#   snakemake --cores all --profile slurm --configfile config/paper.yaml   # the paper, on Slurm


from snakemake.utils import min_version

# the floor is the release envs/requirements.txt pins and CI runs (9.27.1); older ones are untested
min_version("9.27")


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


# validates the config (hades.config) at parse time, before any job starts. Each rule names the
# pinned environment of its stage (`conda: "../../envs/<stage>.yaml"`, used with `--sdm conda`).
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/analysis.smk"


report: "workflow/report/workflow.rst"


localrules:
    all,


rule all:
    default_target: True
    input:
        final_outputs,

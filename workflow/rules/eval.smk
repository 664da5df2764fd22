# Evaluation stage: lm-eval per model, passkey retrieval per passkey.models, Tables 1-2.
#
#   prepare_eval_data  eval.sources.<task> (a benchmark release) -> results/eval_data/<task>/
#   lm_eval            results/eval/{model}/lm_eval.json       hades.eval.harness.evaluate_checkpoint
#   passkey            results/passkey/{model}/passkey.csv     hades.eval.passkey.passkey_checkpoint
#   tables             results/tables/table{1,2}.{md,csv,tex}  hades.eval.tables.make_tables
#
# Which data each task reads is hades.eval.taskspec.default_local_data: the project tasks read the
# corpus files, a task in eval.sources reads the dir prepare_eval_data makes, eval.local_data wins
# over both (a dir the user prepared with `hades prepare-eval-data`). Params carry hashes of the
# config each rule reads, so editing eval.* reruns lm_eval and editing passkey.* reruns passkey.
# GPUs: resources.gpus_per_eval_job of the config; slurm/config.yaml (set-resources lm_eval /
# passkey) overrides them on a cluster.

# stdlib-only imports: parsing stays fast (no torch)
from hades.eval.prepare import PAPER_TASKS, source_files
from hades.eval.taskspec import (
    PROJECT_TASKS,
    EvalTaskError,
    check_stock_task_names,
    check_tasks,
)

EVAL_TASKS = list(CFG.eval.tasks)
EVAL_SOURCES = dict(CFG.eval.sources)
EVAL_LOCAL = dict(CFG.eval.local_data)
# an offline task without local data fails here, when the config is parsed, not after training
try:
    check_tasks(
        EVAL_TASKS,
        set(EVAL_LOCAL) | set(EVAL_SOURCES),
        offline=CFG.eval.offline,
    )
    # a misspelt online task, too: reads a few of lm-eval's task files, and builds its index
    # (~20 s, imports lm-eval) only for a name no task file declares (hades.eval.taskspec)
    check_stock_task_names(
        EVAL_TASKS,
        set(EVAL_LOCAL) | set(EVAL_SOURCES),
        offline=CFG.eval.offline,
    )
    for _task in EVAL_SOURCES:
        if _task not in PAPER_TASKS:
            raise EvalTaskError(
                f"eval.sources.{_task}: no converter for this task; known: {', '.join(PAPER_TASKS)}"
            )
except EvalTaskError as e:
    config_problem(f"{CONFIG_SOURCE}: {e}")
# inputs of lm_eval that the DAG produces (user-managed eval.local_data paths are not inputs:
# a missing one fails the job with a one-line message naming the key)
EVAL_DATA_INPUTS = {
    task: (
        f"{CORPUS_DIR}/{PROJECT_TASKS[task]}"
        if task in PROJECT_TASKS
        else res("eval_data", task)
    )
    for task in EVAL_TASKS
    if task not in EVAL_LOCAL and (task in PROJECT_TASKS or task in EVAL_SOURCES)
}


rule prepare_eval_data:
    input:
        lambda w: [str(p) for p in source_files(w.task, EVAL_SOURCES[w.task])],
    output:
        directory(res("eval_data", "{task}")),
    log:
        log_path("prepare_eval_data", "{task}"),
    benchmark:
        bench_path("prepare_eval_data", "{task}")
    wildcard_constraints:
        task="|".join(PAPER_TASKS),
    conda:
        "../../envs/eval.yaml"
    params:
        src=lambda w: EVAL_SOURCES[w.task],
    script:
        "../scripts/prepare_eval_data.py"


rule lm_eval:
    input:
        unpack(trained),
        **EVAL_DATA_INPUTS,
    output:
        EVAL_JSON,
    log:
        log_path("lm_eval", "{model}"),
    benchmark:
        bench_path("lm_eval", "{model}")
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        gpu=CFG.resources.gpus_per_eval_job,
    params:
        eval=cfg_hash("eval"),
        experiment=lambda w: cfg_hash("experiment", w.model),
    script:
        "../scripts/lm_eval.py"


rule passkey:
    input:
        unpack(trained),
    output:
        csv=PASSKEY_CSV,
        json=res("passkey", "{model}", "passkey.json"),
    log:
        log_path("passkey", "{model}"),
    benchmark:
        bench_path("passkey", "{model}")
    wildcard_constraints:
        model="|".join(PASSKEY_MODELS) or "^$",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        gpu=CFG.resources.gpus_per_eval_job,
    params:
        passkey=cfg_hash("passkey"),
        experiment=lambda w: cfg_hash("experiment", w.model),
    script:
        "../scripts/passkey.py"


rule tables:
    input:
        eval_jsons(),
    output:
        TABLES,
    log:
        log_path("tables"),
    benchmark:
        bench_path("tables")
    conda:
        "../../envs/eval.yaml"
    params:
        experiments=config_hash(
            {
                gid: [e.label, e.table, e.paper_key]
                for gid, e in CFG.experiments.items()
            }
        ),
    script:
        "../scripts/tables.py"

# Training stage: the MLflow store, then one training job per grid id.
#
#   mlflow_init   results/mlflow/experiment.json    hades.tracking.init_store
#   train         results/checkpoints/{model}/final/, results/train/{model}/{summary.json,
#                 metrics.jsonl}                     hades.train.train (torchrun on >1 GPU)
#
# Resume after a crash: the resume checkpoints results/checkpoints/{model}/step_* and the
# MLflow run id next to them are deliberately *not* outputs. Snakemake deletes the declared
# outputs of a failed job, so these survive, and rerunning the rule (or the profile's
# `retries`) continues from the newest good checkpoint into the same MLflow run. A job stopped
# by SIGTERM exits with status 75 after writing a checkpoint (docs/reliability.md). After a
# kill -9 of snakemake itself: `snakemake --unlock && snakemake --cores all --rerun-incomplete`.
# Snakemake deletes the declared log before a rerun; the script also appends every attempt's
# lines to results/logs/train/{model}.attempts.log (undeclared), so a crash's traceback stays.
# Reruns: params carry the hash of the resolved experiment, so editing one grid entry retrains
# only that model (and what reads it); a retrain with another config sets old checkpoints aside.
# Cluster resources: slurm/config.yaml (set-resources train) overrides the defaults below.


rule mlflow_init:
    # Creates the SQLite store and the experiment once, before any job logs to it (first-time
    # creation by several jobs at once would run the schema migrations concurrently).
    output:
        MLFLOW_EXPERIMENT,
    log:
        log_path("mlflow_init"),
    benchmark:
        bench_path("mlflow_init")
    localrule: True
    conda:
        "../../envs/train.yaml"
    params:
        tracking=cfg_hash("tracking"),
    script:
        "../scripts/mlflow_init.py"


rule train:
    input:
        manifest=TOKENS_MANIFEST,
        tokenizer=TOKENIZER,
        mlflow=MLFLOW_EXPERIMENT,
    output:
        checkpoint=directory(CHECKPOINT_FINAL),
        summary=TRAIN_SUMMARY,
        metrics=TRAIN_METRICS,
    log:
        log_path("train", "{model}"),
    benchmark:
        bench_path("train", "{model}")
    conda:
        "../../envs/train.yaml"
    # train.num_threads of the grid id; 0 (torch's default) counts as one core here
    threads: lambda w: max(1, CFG.experiment(w.model).train.num_threads)
    resources:
        gpu=CFG.resources.gpus_per_train_job,
        cpus_per_task=lambda w: max(1, CFG.experiment(w.model).train.num_threads),
        mem_mb=4000,
        runtime=60,
    params:
        experiment=lambda w: cfg_hash("experiment", w.model),
    script:
        "../scripts/train.py"

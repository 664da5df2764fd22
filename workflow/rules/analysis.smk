# Analysis stage: the paper's figures and the run's summary tables, each tagged for the HTML
# report (`snakemake --report results/report.html`) with a caption from workflow/report/.
#
#   spectrum        Fig. 2  per-slot FFT spectra of one HADES layer      hades.analysis.spectrum
#   delta_hist      Fig. 4  histogram of Δ_HADES − Δ                     hades.analysis.delta
#   passkey_figure  Fig. 3  passkey heatmaps (passkey.models)            hades.analysis.passkey_figure
#   curves          training loss / aux losses, params + throughput     hades.analysis.curves
#   analysis_table  the spectral claims as numbers, per analysed model   hades.analysis.summary
#   study_table     val loss vs unigram entropy, clipping, λ1·L_balance  hades.analysis.study
#   table_html      Tables 1-2 as HTML pages for the report              hades.analysis.summary
#   figures         results/figures/index.md: every figure of the run (the target of `rule all`)
#
# Every rule reads result files and checkpoints only, never MLflow, so each reruns alone, e.g.
#   snakemake --cores 1 --forcerun spectrum results/analysis/hades/spectrum.json


ANALYSIS_LABELS = {gid: exp.label for gid, exp in CFG.experiments.items()}
# the spectral analyses need the HADES hooks: only HADES-family grid ids match {model} here
HADES_IDS = [gid for gid, exp in CFG.experiments.items() if exp.model.arch == "hades"]
HADES_MODEL = "|".join(HADES_IDS) or "^$"
FIG = res("figures")
SPECTRUM_FIG = f"{FIG}/spectrum_{{model}}"
DELTA_FIG = f"{FIG}/delta_hist_{{model}}"
PAPER_TABLES = ("table1", "table2")
# (report() is written out in each rule: `snakemake --lint` flags rule files that define functions)


rule spectrum:
    input:
        unpack(trained),
        val=f"{CORPUS_DIR}/val.jsonl",
    output:
        json=res("analysis", "{model}", "spectrum.json"),
        png=report(
            f"{SPECTRUM_FIG}.png",
            caption="../report/spectrum.rst",
            category="Figures",
            subcategory="Fig. 2: filter spectra",
            labels={"model": "{model}"},
        ),
        pdf=f"{SPECTRUM_FIG}.pdf",
    log:
        log_path("spectrum", "{model}"),
    benchmark:
        bench_path("spectrum", "{model}")
    wildcard_constraints:
        model=HADES_MODEL,
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    params:
        cfg=cfg_hash("analysis"),
    script:
        "../scripts/spectrum.py"


rule delta_hist:
    input:
        unpack(trained),
        val=f"{CORPUS_DIR}/val.jsonl",
    output:
        json=res("analysis", "{model}", "delta.json"),
        png=report(
            f"{DELTA_FIG}.png",
            caption="../report/delta_hist.rst",
            category="Figures",
            subcategory="Fig. 4: spectral bias and Δ",
            labels={"model": "{model}"},
        ),
        pdf=f"{DELTA_FIG}.pdf",
    log:
        log_path("delta_hist", "{model}"),
    benchmark:
        bench_path("delta_hist", "{model}")
    wildcard_constraints:
        model=HADES_MODEL,
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    params:
        cfg=cfg_hash("analysis"),
    script:
        "../scripts/delta_hist.py"


rule passkey_figure:
    input:
        csvs=passkey_csvs(PASSKEY_MODELS),
    output:
        png=report(
            f"{FIG}/passkey.png",
            caption="../report/passkey.rst",
            category="Figures",
            subcategory="Fig. 3: passkey retrieval",
        ),
        pdf=f"{FIG}/passkey.pdf",
    log:
        log_path("passkey_figure"),
    benchmark:
        bench_path("passkey_figure")
    conda:
        "../../envs/analysis.yaml"
    params:
        models=PASSKEY_MODELS,
        labels=ANALYSIS_LABELS,
    script:
        "../scripts/passkey_figure.py"


rule curves:
    input:
        summaries=train_summaries(),
        metrics=expand(TRAIN_METRICS, model=GRID),
    output:
        loss_png=report(
            f"{FIG}/training_loss.png",
            caption="../report/training_loss.rst",
            category="Figures",
            subcategory="Training",
        ),
        loss_pdf=f"{FIG}/training_loss.pdf",
        aux_png=report(
            f"{FIG}/aux_losses.png",
            caption="../report/aux_losses.rst",
            category="Figures",
            subcategory="Training",
        ),
        aux_pdf=f"{FIG}/aux_losses.pdf",
        csv=res("tables", "efficiency.csv"),
        md=res("tables", "efficiency.md"),
        html=report(
            res("tables", "efficiency.html"),
            caption="../report/efficiency.rst",
            category="Tables",
            labels={"table": "parameters and throughput"},
        ),
    log:
        log_path("curves"),
    benchmark:
        bench_path("curves")
    conda:
        "../../envs/analysis.yaml"
    params:
        models=GRID,
        labels=ANALYSIS_LABELS,
    script:
        "../scripts/curves.py"


rule analysis_table:
    input:
        spectrum=expand(rules.spectrum.output.json, model=ANALYSIS_MODELS),
        delta=expand(rules.delta_hist.output.json, model=ANALYSIS_MODELS),
    output:
        csv=res("tables", "analysis.csv"),
        md=res("tables", "analysis.md"),
        html=report(
            res("tables", "analysis.html"),
            caption="../report/analysis_table.rst",
            category="Tables",
            labels={"table": "spectral analysis"},
        ),
    log:
        log_path("analysis_table"),
    conda:
        "../../envs/analysis.yaml"
    params:
        models=ANALYSIS_MODELS,
        labels=ANALYSIS_LABELS,
    script:
        "../scripts/analysis_table.py"


rule study_table:
    input:
        manifest=TOKENS_MANIFEST,
        summaries=train_summaries(),
        metrics=expand(TRAIN_METRICS, model=GRID),
        evals=eval_jsons() if workflow.is_rule("lm_eval") else [],
    output:
        json=res("analysis", "study.json"),
        csv=res("tables", "training.csv"),
        md=res("tables", "training.md"),
        html=report(
            res("tables", "training.html"),
            caption="../report/study_table.rst",
            category="Tables",
            labels={"table": "training and validation"},
        ),
    log:
        log_path("study_table"),
    conda:
        "../../envs/analysis.yaml"
    params:
        models=GRID,
        labels=ANALYSIS_LABELS,
        grad_clips={gid: CFG.experiment(gid).train.grad_clip for gid in GRID},
    script:
        "../scripts/study_table.py"


rule table_html:
    input:
        res("tables", "{table}.csv"),
    output:
        report(
            res("tables", "{table}.html"),
            caption="../report/paper_table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    log:
        log_path("table_html", "{table}"),
    wildcard_constraints:
        table="|".join(PAPER_TABLES),
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/table_html.py"


# Everything the figure index lists: the figures and tables of every stage present (the
# rule files are included in stage order, so train and eval rules are known here).
FIGURE_INPUTS = (
    list(rules.curves.output)
    + list(rules.study_table.output)
    + expand(rules.spectrum.output, model=ANALYSIS_MODELS)
    + expand(rules.delta_hist.output, model=ANALYSIS_MODELS)
    + (list(rules.analysis_table.output) if ANALYSIS_MODELS else [])
    + (
        list(rules.passkey_figure.output)
        if PASSKEY_MODELS and workflow.is_rule("passkey")
        else []
    )
    + (
        expand(rules.table_html.output, table=PAPER_TABLES)
        if workflow.is_rule("tables")
        else []
    )
)


rule figures:
    input:
        FIGURE_INPUTS,
    output:
        res("figures", "index.md"),
    log:
        log_path("figures"),
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figures.py"

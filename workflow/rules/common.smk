"""Shared state of the workflow, included first by the Snakefile.

- CFG: the validated config (hades.config.Config); validation runs here, at parse time, so a
  typo stops Snakemake before any job starts and the message names the key and the file.
- GRID: the experiment ids (the `{model}` wildcard).
- Path helpers: the results layout of docs/CONTRACTS.md, in one place.
- cfg_hash(section, model=None): a short hash of one resolved config section, used as a rule
  param so that Snakemake's `params` rerun trigger reruns exactly the jobs whose section
  changed (a changed experiment reruns only that model's training and what reads it).
- Input functions shared by several stages.

Nothing here touches the network or imports torch: `snakemake -n` must stay fast and offline.
"""

import dataclasses
import os
import sys

from hades.config import ConfigError, config_hash, load_config, read_yaml

# stdlib only: parsing stays fast (no torch)
from hades.data.corpus import expand_text_files
from hades.data.io import DataError
from hades.io import sha256_file


def config_problem(msg):
    """Stop while parsing: `error: <msg>` on stderr, exit status 1, before any job starts.
    (A WorkflowError would end the output with Snakemake's frame lines instead of the reason.)
    """
    sys.exit(f"error: invalid config: {msg}")


def _config_sources():
    """The config files behind `config`, as the user named them (for error messages)."""
    cwd = os.getcwd() + os.sep
    files = [
        str(f)[len(cwd) :] if str(f).startswith(cwd) else str(f)
        for f in workflow.configfiles
    ]
    if workflow.config_settings.config:
        files.append("--config")
    return " + ".join(files) or "<config>"


CONFIG_SOURCE = _config_sources()
try:
    # Snakemake parsed the files already, keeping the last of a duplicated key silently; read
    # them again with the config's own loader, which refuses a duplicate naming file and line
    for _f in workflow.configfiles:
        read_yaml(_f)
    CFG = load_config(config, source=CONFIG_SOURCE)
except ConfigError as e:
    config_problem(
        e
    )  # one line per problem instead of a traceback through Snakemake's parser

GRID = list(CFG.experiments)
RESULTS = CFG.results_dir.rstrip("/")
PASSKEY_MODELS = list(CFG.passkey.models)
# inputs the user names in the config: refused here, naming the key, not after training
TEXT_FILES = []
if CFG.data.source == "text_files":
    try:
        TEXT_FILES = [str(p) for p in expand_text_files(CFG.data.text_files)]
    except DataError as e:
        config_problem(f"{CONFIG_SOURCE}: {e}")
if PASSKEY_MODELS and CFG.passkey.max_length is not None:
    for _length in CFG.passkey.lengths:
        if (
            _length > CFG.passkey.max_length
        ):  # the wording of hades.eval.passkey.check_lengths
            config_problem(
                f"{CONFIG_SOURCE}: passkey length {_length} exceeds passkey.max_length "
                f"{CFG.passkey.max_length}; raise passkey.max_length or drop the length"
            )
ANALYSIS_MODELS = list(CFG.analysis.models)


wildcard_constraints:
    model="|".join(GRID),


# --- paths (docs/CONTRACTS.md "Results layout") ------------------------------------------


def res(*parts):
    """A path under the results directory: res("eval", "{model}", "lm_eval.json")."""
    return "/".join((RESULTS,) + tuple(str(p) for p in parts))


def log_path(rule_name, *wildcards):
    """results/logs/<rule>/<wildcards>.log; no wildcards -> results/logs/<rule>.log"""
    if not wildcards:
        return res("logs", f"{rule_name}.log")
    return res("logs", rule_name, "_".join(wildcards) + ".log")


def bench_path(rule_name, *wildcards):
    """results/benchmarks/<rule>/<wildcards>.tsv (same naming as log_path)."""
    if not wildcards:
        return res("benchmarks", f"{rule_name}.tsv")
    return res("benchmarks", rule_name, "_".join(wildcards) + ".tsv")


CORPUS_DIR = res("data", "corpus")
CORPUS_FILES = [
    f"{CORPUS_DIR}/{name}"
    for name in ("train.jsonl", "val.jsonl", "cloze.jsonl", "corpus.json")
]
TOKENIZER = res("tokenizer", "tokenizer.json")
TOKENS_MANIFEST = res("data", "tokens", "manifest.json")
MLFLOW_EXPERIMENT = res("mlflow", "experiment.json")
CHECKPOINT_FINAL = res("checkpoints", "{model}", "final")
TRAIN_SUMMARY = res("train", "{model}", "summary.json")
TRAIN_METRICS = res("train", "{model}", "metrics.jsonl")
EVAL_JSON = res("eval", "{model}", "lm_eval.json")
PASSKEY_CSV = res("passkey", "{model}", "passkey.csv")
ANALYSIS_JSONS = [
    res("analysis", "{model}", f"{name}.json") for name in ("spectrum", "delta")
]
TABLES = [
    res("tables", f"table{n}.{ext}") for n in (1, 2) for ext in ("md", "csv", "tex")
]


# --- config hashes as params ----------------------------------------------------------------


def cfg_hash(section, model=None):
    """Short hash of one resolved config section, for a rule's `params:`.

    cfg_hash("data") / "tokenizer" / "eval" / "passkey" / "analysis" / "tracking": that
    top-level section. cfg_hash("experiment", "{model}" value): the *resolved* experiment of
    one grid id (top-level model/train defaults merged with its overrides), so changing the
    top-level defaults reruns every model, and changing one entry reruns only that one.
    Usage in a rule: `params: cfg=lambda w: cfg_hash("experiment", w.model)`.
    """
    if section == "experiment":
        return config_hash(dataclasses.asdict(CFG.experiment(model)))
    assert model is None, f"cfg_hash({section!r}) takes no model, got {model!r}"
    assert hasattr(CFG, section), f"cfg_hash: unknown config section {section!r}"
    # the section as written, not the typed one: a default added in hades.config reruns nothing
    return config_hash(CFG.raw_section(section))


# --- input functions --------------------------------------------------------------------------


def trained(wildcards):
    """What an evaluation of `{model}` reads: its final checkpoint and training summary."""
    return {
        "checkpoint": CHECKPOINT_FINAL.format(model=wildcards.model),
        "summary": TRAIN_SUMMARY.format(model=wildcards.model),
    }


def eval_jsons(models=None):
    return expand(EVAL_JSON, model=models or GRID)


def train_summaries(models=None):
    return expand(TRAIN_SUMMARY, model=models or GRID)


def passkey_csvs(models=None):
    return expand(PASSKEY_CSV, model=models or PASSKEY_MODELS)


def analysis_jsons(models=None):
    return expand(ANALYSIS_JSONS, model=models or ANALYSIS_MODELS)


# --- the targets of `rule all` ----------------------------------------------------------------


def final_outputs(wildcards):
    """Every final output of the DAG: train summaries, lm-eval JSONs, passkey CSVs, Tables
    1-2, the analysis JSONs and the figure index (whose inputs are every figure and report
    table). Evaluated after all rule files are parsed."""
    return (
        train_summaries()
        + eval_jsons()
        + passkey_csvs()
        + TABLES
        + analysis_jsons()
        + list(rules.figures.output)
    )


# -- data stage (rules in data.smk) ------------------------------------------------------

DATA_NUM_SHARDS = CFG.data.num_shards
TOKEN_PART = res("data", "tokens", "parts", "{split}-{shard}.json")


def data_token_parts():
    """The per-shard records the manifest gathers: num_shards train shards, one val shard."""
    return expand(TOKEN_PART, split="train", shard=range(DATA_NUM_SHARDS)) + expand(
        TOKEN_PART, split="val", shard=[0]
    )


def data_corpus_sources(wildcards):
    """Local files the corpus reads (data.source text_files, directories and globs expanded),
    so an edited or added file reruns it."""
    return TEXT_FILES


def data_tokenizer_inputs(wildcards):
    """train_bpe learns from the train split; file and hub do not read the corpus."""
    if CFG.tokenizer["kind"] == "train_bpe":
        return {"train": f"{CORPUS_DIR}/train.jsonl"}
    return {}


def data_tokenizer_source():
    """sha256 of tokenizer.path (kind file), a param rather than an input so that a dry run of
    the paper config works before the file is in place (the job then fails with a clear error).
    """
    path = CFG.tokenizer.get("path")
    if CFG.tokenizer["kind"] == "file" and path and os.path.isfile(path):
        return sha256_file(path)
    return None


def data_shard_count(wildcards):
    return DATA_NUM_SHARDS if wildcards.split == "train" else 1

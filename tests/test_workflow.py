"""The Snakemake workflow as a user drives it: lint, dry runs, config errors, reruns, Slurm plan.

Every test runs Snakemake as a subprocess from the repository root, the way the README says, in
a temporary working directory (`workdir`, see _workflow_support): what a real run left in the
checkout's results/ and .snakemake/ cannot change what a test plans. Reruns are tested on a
throwaway results directory whose outputs are created empty and stamped with
`snakemake --touch --forceall` (which records the same metadata a real run does), so no test
trains a model. `test_pipeline_results` checks a finished default run (skipped until
`snakemake --cores all` has produced results/; .ci/run runs it after the pipeline): the one
test that reads the checkout's state, on purpose.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import yaml
from _workflow_support import snakemake_cmd

from hades.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = load_config(ROOT / "config" / "config.yaml")
PAPER = load_config(ROOT / "config" / "paper.yaml")
GPU_STUDY = ROOT / "config" / "gpu.yaml"
SHARED = ROOT.parent / "shared"  # the project's data samples, beside the checkout (CI has them)
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
GPU_RULES = ("train", "lm_eval", "passkey")


def snakemake(
    *args: str, workdir: Path, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run `snakemake ARGS` from the repository root in working directory `workdir`; stdout and
    stderr together in .stdout."""
    full_env = {**os.environ, **OFFLINE_ENV, **(env or {})}
    full_env.pop("SNAKEMAKE_PROFILE", None)
    return subprocess.run(
        snakemake_cmd(workdir, *args),
        cwd=ROOT,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, (
        f"snakemake failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}"
    )
    return proc.stdout


def planned_jobs(dry_run_output: str) -> list[dict]:
    """Parse `snakemake -n` output into [{rule, wildcards: {..}, resources: {..}}]."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", "\n" + dry_run_output):
        m = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        if not m:
            continue
        job = {"rule": m.group(1), "wildcards": {}, "resources": {}}
        for key in ("wildcards", "resources"):
            line = re.search(rf"^\s+{key}: (.*)$", block, re.M)
            if line:
                for item in line.group(1).split(", "):
                    name, _, value = item.partition("=")
                    job[key][name.strip()] = value.strip()
        jobs.append(job)
    return jobs


def rule_counts(jobs: list[dict]) -> Counter:
    return Counter(j["rule"] for j in jobs)


@pytest.fixture
def workdir(tmp_path):
    """A fresh working directory for Snakemake. A subdirectory of tmp_path: the config errors
    name a config file under the working directory by its relative path (common.smk), and the
    tests expect the full path of the files they write to tmp_path."""
    return tmp_path / "workdir"


def test_lint_is_clean(workdir):
    out = ok(snakemake("--lint", workdir=workdir))
    assert "Lints for" not in out, out


def test_default_dry_run_plans_the_whole_grid(workdir):
    counts = rule_counts(planned_jobs(ok(snakemake("-n", "--cores", "all", workdir=workdir))))
    grid = len(DEFAULT.experiments)
    assert counts["train"] == grid, counts
    assert counts["lm_eval"] == grid, counts
    assert counts["passkey"] == len(DEFAULT.passkey["models"]), counts
    for rule in ("corpus", "tokenizer", "tokenize", "mlflow_init", "tables", "all"):
        assert counts[rule] == 1, (rule, counts)


SOCKET_GUARD = textwrap.dedent(
    """
    # Loaded by Python at start-up (PYTHONPATH): records and refuses any non-loopback connection.
    import os, socket

    _LOG = os.environ["HADES_NET_LOG"]
    _connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def _local(host):
        return not isinstance(host, str) or host in ("localhost", "::1") or host.startswith("127.")

    def _refuse(what):
        with open(_LOG, "a") as f:
            f.write(what + "\\n")
        raise OSError(f"network access refused in a dry run: {what}")

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            _refuse(f"connect {address!r}")
        return _connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _local(host):
            _refuse(f"getaddrinfo {host!r}")
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
    """
)


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason=f"no {SHARED}/data beside the checkout")
def test_gpu_study_config_validates_and_plans_every_model(tmp_path):
    """config/gpu.yaml (the one-GPU study): schema-valid, and a dry run plans every grid id's
    training and evaluation, the nine benchmark conversions from ../shared/data and passkey.
    Its paths are relative to the working directory, so ../shared sits next to it here too."""
    cfg = load_config(GPU_STUDY)
    assert len(cfg.experiments) >= 11 and {"smamba", "mamba2", "hades"} <= set(cfg.experiments)
    (tmp_path / "shared").symlink_to(SHARED)
    out = ok(snakemake("-n", "--configfile", str(GPU_STUDY), "--resources", "gpu=8", workdir=tmp_path / "wd"))
    counts = rule_counts(planned_jobs(out))
    assert counts["train"] == counts["lm_eval"] == len(cfg.experiments), counts
    assert counts["prepare_eval_data"] == 9, counts
    assert counts["passkey"] == len(cfg.passkey["models"]), counts
    for rule in ("corpus", "tokenizer", "tokenize", "study_table", "tables", "all"):
        assert counts[rule] == 1, (rule, counts)


def test_paper_dry_run_prints_the_full_dag_offline(tmp_path, workdir):
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(SOCKET_GUARD)
    net_log = tmp_path / "network.log"
    env = {
        "PYTHONPATH": os.pathsep.join([str(guard), os.environ.get("PYTHONPATH", "")]),
        "HADES_NET_LOG": str(net_log),
    }
    out = ok(snakemake("-n", "--configfile", "config/paper.yaml", workdir=workdir, env=env))
    assert not net_log.exists(), f"the dry run touched the network:\n{net_log.read_text()}"
    counts = rule_counts(planned_jobs(out))
    grid = len(PAPER.experiments)
    assert counts["train"] == grid and counts["lm_eval"] == grid, counts
    assert counts["passkey"] == len(PAPER.passkey["models"]), counts
    assert counts["tables"] == 1 and counts["all"] == 1, counts


def _typo_config(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["results_dir"] = str(tmp_path / "results")
    edit(raw)
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda raw: raw["train"].update(stpes=raw["train"].pop("steps")), "train.stpes"),
        (
            lambda raw: raw["experiments"]["hades"]["model"].update(n_shard=2),
            "experiments.hades.model.n_shard",
        ),
        (lambda raw: raw["passkey"].update(trials="two"), "passkey.trials"),
    ],
    ids=["unknown-key", "unknown-nested-key", "wrong-type"],
)
def test_config_typo_fails_before_any_job_naming_the_key(tmp_path, workdir, edit, key):
    path = _typo_config(tmp_path, edit)
    # a real run, not a dry run
    proc = snakemake("--cores", "1", "--configfile", str(path), workdir=workdir)
    assert proc.returncode != 0, proc.stdout
    assert key in proc.stdout and str(path) in proc.stdout, proc.stdout
    assert not re.search(r"^(local)?rule \w+:", proc.stdout, re.M), "a job started:\n" + proc.stdout
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def stamped_results(tmp_path_factory):
    """A results dir holding every output of the default DAG (empty files), up to date, and the
    working directory whose .snakemake/ records it (every test of it must run there)."""
    base = tmp_path_factory.mktemp("stamped")
    results, workdir = base / "results", base / "workdir"
    cfg = ["--config", f"results_dir={results}"]
    summary = ok(snakemake("--summary", *cfg, workdir=workdir))
    rows = [line.split("\t") for line in summary.splitlines() if "\t" in line]
    outputs = [row[0] for row in rows if row[0].startswith(str(results))]  # not the header
    assert outputs, summary
    directories = {str(p) for p in _directory_outputs(results)}
    for out in outputs:
        path = Path(out)
        if out in directories:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    ok(snakemake("--cores", "1", "--touch", "--forceall", *cfg, workdir=workdir))
    out = ok(snakemake("-n", *cfg, workdir=workdir))
    assert "Nothing to be done" in out, out
    return results, cfg, workdir


def _directory_outputs(results: Path):
    """The `directory()` outputs of the DAG: the final checkpoint of each model."""
    return [results / "checkpoints" / model / "final" for model in DEFAULT.experiments]


def test_deleting_one_eval_output_rebuilds_only_that(stamped_results):
    results, cfg, workdir = stamped_results
    target = results / "eval" / "mamba2" / "lm_eval.json"
    target.unlink()
    try:
        jobs = planned_jobs(ok(snakemake("-n", *cfg, workdir=workdir)))
        model_jobs = [j for j in jobs if "model" in j["wildcards"]]
        assert [(j["rule"], j["wildcards"]["model"]) for j in model_jobs] == [
            ("lm_eval", "mamba2")
        ], jobs
        # what reads every eval JSON (the tables, the report's inputs) reruns too; nothing else
        assert "train" not in rule_counts(jobs) and "passkey" not in rule_counts(jobs), jobs
    finally:
        target.touch()


def test_changed_model_config_reruns_only_that_models_downstream(stamped_results, tmp_path):
    results, cfg, workdir = stamped_results
    # a second config file on top of the default one (`--config` would pass "8" as a string)
    override = tmp_path / "override.yaml"
    override.write_text("experiments: {mamba2: {model: {arch: mamba2, d_state: 8}}}\n")
    configs = ("--configfile", "config/config.yaml", str(override))
    out = ok(snakemake("-n", *configs, *cfg, workdir=workdir))
    jobs = planned_jobs(out)
    models = {j["wildcards"].get("model") for j in jobs} - {None}
    assert models == {"mamba2"}, jobs
    rules = rule_counts(jobs)
    assert rules["train"] == 1 and rules["lm_eval"] == 1, rules
    assert rules["corpus"] == rules["tokenize"] == 0, rules


def test_slurm_profile_plans_gpu_jobs_for_the_paper(workdir):
    profile = ("--profile", "slurm", "--configfile", "config/paper.yaml")
    out = ok(snakemake("-n", "--cores", "all", *profile, workdir=workdir))
    jobs = planned_jobs(out)
    for rule in GPU_RULES:
        gpu_jobs = [j for j in jobs if j["rule"] == rule]
        assert gpu_jobs, f"no {rule} job planned"
        for job in gpu_jobs:
            res = job["resources"]
            assert int(res.get("gpu", 0)) >= 1, (rule, res)
            assert int(res["cpus_per_task"]) > 1 and int(res["mem_mb"]) >= 16000, (rule, res)
            assert int(res["runtime"]) > 60, (rule, res)
    train = next(j for j in jobs if j["rule"] == "train")["resources"]
    assert int(train["gpu"]) == PAPER.resources["gpus_per_train_job"], train
    # SIGTERM 10 min before the time limit, to the job's steps (not "B:", the batch shell only):
    # the trainer runs as its own step, so it checkpoints and exits 75 (docs/cluster.md)
    extra = train.get("slurm_extra", "")
    assert "--signal=TERM@" in extra and "B:" not in extra, train


def test_hades_plan_estimates_gpu_hours_per_stage():
    proc = subprocess.run(
        [sys.executable, "-m", "hades.cli", "plan", "config/paper.yaml", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    plan = json.loads(proc.stdout)
    stages = {s["stage"]: s for s in plan["stages"]}
    assert {"train", "lm_eval", "passkey"} <= set(stages), stages
    train = stages["train"]
    assert train["jobs"] == len(PAPER.experiments)
    # 6*N*tokens, N ~ 2e8..4e8, 200B tokens each: O(1e21) FLOPs for the grid
    assert 1e20 < train["flops"] < 1e22, train
    assert train["gpu_hours"] > stages["lm_eval"]["gpu_hours"] > 0, stages
    # the archs with a measured step at their paper shape are planned from it, the rest from the
    # FLOP model; --train-model plans every one from the model
    from hades.plan import MEASURED_TRAIN_TOKENS_PER_S

    per = train["per_experiment"]
    tokens = PAPER.experiments["hades"].train
    tokens = tokens.steps * tokens.global_batch * tokens.seq_len
    rate = MEASURED_TRAIN_TOKENS_PER_S[("hades", 1024, 48, 128)][0]
    assert abs(per["hades"]["gpu_hours"] - tokens / rate / 3600) < 1e-6 * per["hades"]["gpu_hours"], per["hades"]
    assert per["linear_attn"]["source"] == "FLOP model" and per["linear_attn"]["gpu_hours"] == per["linear_attn"]["model_gpu_hours"]
    assert abs(sum(e["gpu_hours"] for e in per.values()) - train["gpu_hours"]) < 1e-6 * train["gpu_hours"]
    modelled = subprocess.run(
        [sys.executable, "-m", "hades.cli", "plan", "config/paper.yaml", "--json", "--train-model"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert modelled.returncode == 0, modelled.stderr
    m_train = next(s for s in json.loads(modelled.stdout)["stages"] if s["stage"] == "train")
    assert all(e["source"] == "FLOP model" for e in m_train["per_experiment"].values()), m_train
    assert abs(m_train["gpu_hours"] - sum(e["model_gpu_hours"] for e in per.values())) < 1e-6 * m_train["gpu_hours"]


# --- a finished default run ----------------------------------------------------------------

# the results of `snakemake --cores all` (or of `--config results_dir=DIR` with HADES_RESULTS_DIR)
FINISHED = Path(os.environ.get("HADES_RESULTS_DIR") or ROOT / DEFAULT.results_dir).resolve()


@pytest.mark.skipif(
    not (FINISHED / "tables" / "table1.md").exists(),
    reason=f"needs a finished `snakemake --cores all` ({FINISHED}/tables/table1.md)",
)
def test_pipeline_results_and_mlflow_runs():
    from mlflow.tracking import MlflowClient

    # in the checkout, whose .snakemake/ holds the metadata (params, code) of that run
    out = ok(snakemake("-n", "--config", f"results_dir={FINISHED}", workdir=ROOT))
    assert "Nothing to be done" in out, out
    client = MlflowClient(tracking_uri=f"sqlite:///{FINISHED / 'mlflow.db'}")
    exp = client.get_experiment_by_name(DEFAULT.tracking_experiment)
    assert exp is not None, f"no MLflow experiment {DEFAULT.tracking_experiment!r}"
    by_model: dict[str, list] = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        if "hades.superseded_by" not in run.data.tags:  # a run replaced by a fresh training
            by_model.setdefault(run.data.tags.get("hades.grid_id"), []).append(run)
    assert set(by_model) == set(DEFAULT.experiments), sorted(by_model)
    for model in DEFAULT.experiments:
        assert len(by_model[model]) == 1, f"{model}: {len(by_model[model])} runs"
        run = by_model[model][0]
        assert run.info.status == "FINISHED", (model, run.info.status)
        metrics = set(run.data.metrics)
        history = sorted(
            client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step
        )
        steps = DEFAULT.experiments[model].train.steps
        assert len(history) >= 2 and max(m.step for m in history) == steps, (model, len(history))
        assert history[-1].value < history[0].value, f"{model}: the training loss did not fall"
        assert any(k.startswith("eval/") for k in metrics), (model, sorted(metrics))
        if model in DEFAULT.passkey["models"]:
            assert "passkey/accuracy" in metrics, (model, sorted(metrics))

"""Preemption under Slurm (docs/cluster.md "Preemption and time limits").

- test_rerun_after_outputs_deleted_reexports: the race of a job cancelled after its trainer
  exported the model (Snakemake deletes final/ and summary.json of the failed job): the last
  step's checkpoint is kept, so the rerun resumes at the last step, re-exports the same weights
  into the same MLflow run, and trains nothing again. CPU, seconds.
- test_scancel_term_checkpoints_and_rerun_resumes: end to end on a real Slurm (the test
  cluster of scripts/slurm_test_cluster.sh): a toy training submitted through
  `snakemake --profile slurm` gets `scancel -s TERM <job>` mid-run, writes a checkpoint and
  exits 75; rerunning the same command resumes from that step into the same MLflow run and
  finishes. Skipped unless `sinfo` answers (HADES_REQUIRE_SLURM=1 makes that a failure, as in
  `scripts/slurm_test_cluster.sh preempt`). 130-220 s on 2 cores, most of it job start-up and the
  plugin's status polling.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _train_support import (
    assert_bitwise_equal,
    final_weights,
    metric_history,
    metrics_rows,
    mlflow_runs,
    tiny_env,
)

from hades.train import train
from hades.train.checkpoint import list_checkpoints

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    with tiny_env(tmp_path, monkeypatch) as env:
        yield env


def test_rerun_after_outputs_deleted_reexports(tiny, caplog):
    cfg, _ = tiny.config("race", steps=9, checkpoint_every=4, keep_checkpoints=2)
    first = train(cfg, "tiny")
    root = Path(cfg.results_dir) / "checkpoints" / "tiny"
    assert [s for s, _ in list_checkpoints(root)] == [9], "only the last step's checkpoint is kept"
    weights = final_weights(cfg, "tiny")
    # what Snakemake does to the outputs of a job that failed after the export
    shutil.rmtree(root / "final")
    (Path(cfg.results_dir) / "train" / "tiny" / "summary.json").unlink()
    (Path(cfg.results_dir) / "train" / "tiny" / "metrics.jsonl").unlink()
    with caplog.at_level("INFO", logger="hades.train"):
        again = train(cfg, "tiny")
    assert "already complete at step 9; exporting it again" in caplog.text
    assert again["resumed_from"] == [9] and again["steps"] == 9
    assert again["mlflow_run_id"] == first["mlflow_run_id"]
    assert again["final_loss"] == first["final_loss"] and again["tokens"] == first["tokens"]
    assert_bitwise_equal(final_weights(cfg, "tiny"), weights)
    assert [r["step"] for r in metrics_rows(cfg, "tiny")] == list(range(1, 10)), "restored from the checkpoint"
    (run,) = mlflow_runs(cfg, "tiny")
    assert run.info.status == "FINISHED" and run.info.run_id == first["mlflow_run_id"]
    assert [s for s, _ in list_checkpoints(root)] == [9], "disk use stays at one checkpoint"


# -- end to end on Slurm -------------------------------------------------------------------------

STEPS = 50  # 0.3-0.5 s each for the toy mamba2 on one CPU core of the test cluster
STOP_AFTER = 8  # scancel once the trainer is past this step (periodic checkpoints every 10 steps)
RESULTS = Path(os.environ.get("HADES_SLURM_PREEMPT_RESULTS", "results/slurm-preempt"))


def _slurm_up() -> str | None:
    """None when a Slurm controller answers, else why not."""
    if shutil.which("sinfo") is None or shutil.which("scancel") is None:
        return "no Slurm client (sinfo, scancel) on PATH"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if r.returncode != 0:
        return f"sinfo failed: {r.stderr.strip()[:200]}"
    if not re.search(r"^(idle|mixed|allocated)", r.stdout, re.M):
        return f"no usable node: {r.stdout.split()}"
    return None


@pytest.fixture
def slurm():
    why = _slurm_up()
    if why is not None:
        if os.environ.get("HADES_REQUIRE_SLURM") == "1":
            pytest.fail(f"HADES_REQUIRE_SLURM=1 but {why} (start one: scripts/slurm_test_cluster.sh start)")
        pytest.skip(f"{why} (start the test cluster: scripts/slurm_test_cluster.sh start)")


def _toy_config(results: Path) -> Path:
    """The default study cut to one small model whose training takes ~20 s on one core."""
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["name"] = "slurm-preempt"
    raw["results_dir"] = str(results)
    raw["tracking"] = {"uri": None, "experiment": "hades-slurm-preempt"}
    raw["data"]["synthetic"]["n_docs"] = 400
    raw["data"]["val_docs"] = 50
    raw["tokenizer"]["vocab_size"] = 512
    raw["train"].update(steps=STEPS, checkpoint_every=10, log_every=5, warmup_steps=10, num_threads=1)
    raw["experiments"] = {"mamba2": raw["experiments"]["mamba2"]}
    for key in ("passkey", "analysis"):
        raw.pop(key, None)
    path = results / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _profile_cmd(cfg_path: Path, target: Path) -> list[str]:
    """What a user types, with the test cluster's settings (as in slurm_test_cluster.sh run)."""
    account = os.environ.get("HADES_SLURM_ACCOUNT", "test")
    partition = os.environ.get("HADES_SLURM_PARTITION", "test")
    return [
        sys.executable, "-m", "snakemake", "--profile", "slurm", "--jobs", "1", "--retries", "0",
        "--latency-wait", "10", "--configfile", str(cfg_path),
        "--set-resources", "train:gpu=1", "train:cpus_per_task=1", "train:mem_mb=4000", "train:runtime=30",
        "--default-resources", f"slurm_account={account}", f"slurm_partition={partition}",
        "cpus_per_task=1", "mem_mb=2000", "runtime=30",
        "--", str(target),
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HADES_SLURM_ACCOUNT", "test")
    env.setdefault("HADES_SLURM_STATUS_COMMAND", "squeue")  # the test cluster has no slurmdbd
    # the plugin's first status check, and the step its interval grows by (10 s) after that
    env.setdefault("HADES_SLURM_INIT_SECONDS", "2")
    return env


def _last_step(log: Path) -> int:
    steps = re.findall(r" step (\d+)/\d+ ", log.read_text()) if log.exists() else []
    return int(steps[-1]) if steps else 0


def test_scancel_term_checkpoints_and_rerun_resumes(slurm):
    from hades.config import load_config

    results = (REPO / RESULTS).resolve() if not RESULTS.is_absolute() else RESULTS
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    cfg_path = _toy_config(results)
    cfg = load_config(str(cfg_path))
    summary_path = results / "train" / "mamba2" / "summary.json"
    ckpt_root = results / "checkpoints" / "mamba2"
    train_log = results / "logs" / "train" / "mamba2.log"
    env = _env()
    t0 = time.monotonic()

    # the inputs of the training job, built locally (the Slurm subset of the CI covers them)
    inputs = [results / "data" / "tokens" / "manifest.json", results / "tokenizer" / "tokenizer.json", results / "mlflow" / "experiment.json"]
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(cfg_path), "--", *map(str, inputs)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    t_data = time.monotonic()

    # 1. the job, and `scancel -s TERM` once the trainer is past step STOP_AFTER
    first_out = results / "snakemake-first.log"
    with open(first_out, "w") as out:
        proc = subprocess.Popen(_profile_cmd(cfg_path, summary_path), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            jobid = None
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and proc.poll() is None:
                m = re.search(r"submitted with SLURM jobid (\d+)", first_out.read_text())
                jobid = m.group(1) if m else None
                if jobid and _last_step(train_log) >= STOP_AFTER:
                    break
                time.sleep(0.5)
            assert jobid and _last_step(train_log) >= STOP_AFTER, (
                f"the trainer did not reach step {STOP_AFTER} in time:\n{first_out.read_text()[-3000:]}"
            )
            subprocess.run(["scancel", "-s", "TERM", jobid], check=True, timeout=30)
            t_signal = time.monotonic()
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
    t_first = time.monotonic()
    log_text = train_log.read_text()
    assert rc != 0, "the preempted job is reported as failed"
    marker = json.loads((ckpt_root / "PREEMPTED").read_text())
    k = marker["step"]
    assert marker["signal"] == "SIGTERM" and k >= STOP_AFTER and k < STEPS, marker
    assert f"stopped by SIGTERM after step {k}" in log_text and "exit 75" in log_text, log_text[-3000:]
    assert "task 0: Exited with exit code 75" in log_text, "the trainer's own job step exited 75"
    assert (ckpt_root / f"step_{k:08d}").is_dir() and marker["checkpoint"].endswith(f"step_{k:08d}")
    assert not summary_path.exists() and not (ckpt_root / "final").exists()
    state = subprocess.run(["squeue", "-h", "-t", "all", "-j", jobid, "-o", "%T"], capture_output=True, text=True).stdout.strip()
    assert state in ("FAILED", ""), f"job {jobid}: {state}"  # "" once MinJobAge has passed
    run_id = (ckpt_root / "mlflow_run_id").read_text().strip()

    # 2. the same command again: resumes at step k into the same MLflow run, and finishes
    second_out = results / "snakemake-rerun.log"
    with open(second_out, "w") as out:
        r = subprocess.run(_profile_cmd(cfg_path, summary_path), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600)
    t_rerun = time.monotonic()
    assert r.returncode == 0, second_out.read_text()[-3000:]
    summary = json.loads(summary_path.read_text())
    log_text = train_log.read_text()
    assert re.search(rf"resuming from \S*/step_{k:08d} \(step {k}\)", log_text), log_text[:3000]
    assert f"continuing MLflow run {run_id}" in log_text
    assert summary["resumed_from"] == [k] and summary["steps"] == STEPS
    assert summary["mlflow_run_id"] == run_id
    assert [rec["step"] for rec in metrics_rows(cfg, "mamba2")] == list(range(1, STEPS + 1))
    runs = mlflow_runs(cfg, "mamba2", all_stages=False)
    assert [(x.info.run_id, x.info.status) for x in runs] == [(run_id, "FINISHED")]
    assert [m.step for m in metric_history(cfg, run_id, "train/loss")] == list(range(1, STEPS + 1))
    assert [s for s, _ in list_checkpoints(ckpt_root)] == [STEPS], "the last step's checkpoint stays"
    print(
        f"\nSlurm preemption: job {jobid} got SIGTERM at step >= {STOP_AFTER}, checkpoint at step {k}, "
        f"rerun resumed at {k} and finished {STEPS} steps in MLflow run {run_id}; "
        f"data {t_data - t0:.0f} s, first run {t_first - t_data:.0f} s "
        f"(signal after {t_signal - t_data:.0f} s), rerun {t_rerun - t_first:.0f} s"
    )

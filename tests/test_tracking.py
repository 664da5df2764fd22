"""MLflow tracking: the store, one run per model read back through the MLflow API, evaluation
metrics attached to the model's run, and 8 processes logging to the embedded store at once."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
from _train_support import (
    TinyTokens,
    config_dict,
    metric_history,
    metrics_rows,
    mlflow_runs,
    tiny_env,
    write_config,
)

import hades.train.loop as loop
from hades import tracking
from hades.config import load_config
from hades.train import train


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    with tiny_env(tmp_path, monkeypatch) as env:
        yield env


def test_init_store_is_idempotent_and_keeps_artifacts_under_results(tiny):
    cfg, _ = tiny.config("init")
    info = tracking.init_store(cfg)
    assert tracking.init_store(cfg) == info
    on_disk = json.loads((Path(cfg.results_dir) / "mlflow" / "experiment.json").read_text())
    assert on_disk == info and info["experiment"] == "hades-test"
    assert info["tracking_uri"] == f"sqlite:///{Path(cfg.results_dir).resolve() / 'mlflow.db'}"
    exp = tracking._client(cfg.tracking_uri).get_experiment(info["experiment_id"])
    assert exp.artifact_location == (Path(cfg.results_dir).resolve() / "mlflow" / "artifacts").as_uri()
    assert tracking.experiment_id(cfg) == info["experiment_id"]


def test_experiment_is_marked_as_model_training(tiny):
    """MLflow's experiment kind: set on a new experiment, and on one that a study created before
    the tag was set, by rule mlflow_init (init_store) and by the jobs of a resumed study, which
    do not rerun mlflow_init (experiment_id)."""
    cfg, _ = tiny.config("kind")
    exp_id = tracking.init_store(cfg)["experiment_id"]
    client = tracking._client(cfg.tracking_uri)

    def kind():
        return client.get_experiment(exp_id).tags.get("mlflow.experimentKind")

    assert kind() == "custom_model_development"
    for mark in (tracking.init_store, tracking.experiment_id):
        client.delete_experiment_tag(exp_id, "mlflow.experimentKind")
        assert kind() is None
        mark(cfg)
        assert kind() == "custom_model_development", mark.__name__


def test_mlflow_is_offline_and_quiet():
    tracking.configure_offline()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true" and os.environ["DO_NOT_TRACK"] == "true"
    from mlflow.telemetry.utils import is_telemetry_disabled

    assert is_telemetry_disabled()
    assert tracking.metric_key("lm_eval/lambada_openai/acc,none") == "lm_eval/lambada_openai/acc_none"


def test_one_finished_run_per_model_with_its_curve(tiny):
    cfg, _ = tiny.config("grid", grid=("alpha", "beta"), steps=6, checkpoint_every=3)
    for gid in ("alpha", "beta"):
        train(cfg, gid)
    evals = {"toy_ppl": {"word_perplexity,none": 12.5}, "toy_cloze": {"acc,none": 0.25, "alias": "toy_cloze"}}
    rid = tracking.log_eval_metrics(cfg, "alpha", evals, prefix="lm_eval")
    assert tracking.log_eval_metrics(cfg, "alpha", evals, prefix="lm_eval") == rid  # a rerun of the eval

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.tracking_experiment)
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["hades.grid_id"] for r in runs) == ["alpha", "beta"], "one run per model"
    for run in runs:
        gid = run.data.tags["hades.grid_id"]
        assert run.info.status == "FINISHED" and run.info.run_name == gid
        commit = run.data.tags["hades.git_commit"]
        summary = json.loads((Path(cfg.results_dir) / "train" / gid / "summary.json").read_text())
        assert commit == summary["git_commit"] == run.data.tags["mlflow.source.git.commit"]
        assert subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"]).returncode == 0, commit
        assert run.data.tags["hades.config_hash"] == cfg.hash()
        assert run.data.tags["hades.rule"] == "train"
        assert run.data.params["model.d_model"] == "16" and run.data.params["train.lr"] == "0.003"
        assert run.data.params["model.vocab_size"] == "61"
        hist = metric_history(cfg, run.info.run_id, "train/loss")
        assert [(m.step, m.value) for m in hist] == [(r["step"], r["loss"]) for r in metrics_rows(cfg, gid)]
        for key in ("train/lr", "train/grad_norm", "train/aux/balance", "train/tokens_per_s"):
            assert len(metric_history(cfg, run.info.run_id, key)) == 6, key
        arts = {a.path for a in client.list_artifacts(run.info.run_id, "train")}
        assert arts == {"train/summary.json", "train/pipeline.json", "train/config.json"}
        assert (Path(cfg.results_dir) / "checkpoints" / gid / "mlflow_run_id").read_text().strip() == run.info.run_id
    alpha = next(r for r in runs if r.data.tags["hades.grid_id"] == "alpha")
    assert alpha.info.run_id == rid, "evaluation attaches to the model's training run"
    assert alpha.data.metrics["lm_eval/toy_ppl.word_perplexity_none"] == 12.5
    assert alpha.data.metrics["lm_eval/toy_cloze.acc_none"] == 0.25
    assert len(metric_history(cfg, rid, "lm_eval/toy_ppl.word_perplexity_none")) == 1, "not duplicated by the rerun"

    # a retrain after the checkpoints directory (and the run-id file in it) was deleted by hand
    # replaces the model's run instead of adding a second one
    beta_old = next(r for r in runs if r.data.tags["hades.grid_id"] == "beta").info.run_id
    shutil.rmtree(Path(cfg.results_dir) / "checkpoints" / "beta")
    beta_new = train(cfg, "beta")["mlflow_run_id"]
    assert [r.info.run_id for r in mlflow_runs(cfg, "beta", all_stages=False)] == [beta_new]
    old = client.get_run(beta_old)
    assert old.info.lifecycle_stage == "deleted" and old.data.tags["hades.superseded_by"] == beta_new


# -- concurrency ---------------------------------------------------------------------------------

N_PROCS, N_STEPS = 8, 30
TRAIN_KEYS = ("train/loss", "train/lr", "train/grad_norm")


def _log_worker(cfg_path: str, i: int, barrier) -> None:
    """One process: its own training run (a metric batch per step, as the trainer logs), its
    evaluation, and a metric on a model run that every worker shares."""
    code = 1
    try:
        cfg = load_config(cfg_path)
        barrier.wait(timeout=120)  # start together: maximum contention on the SQLite file
        tracking.init_store(cfg)
        run = tracking.TrainingRun.open(
            cfg, f"w{i}", resume_key="k", resuming=False, params={"worker": i}, tags={"hades.rule": "test"}
        )
        for step in range(1, N_STEPS + 1):
            run.log_metrics([(step, {"train/loss": 1.0 / step, "train/lr": float(i), "train/grad_norm": float(step)})])
        run.finish()
        tracking.log_eval_metrics(cfg, f"w{i}", {"toy_ppl": {"ppl": 10.0 + i}, "toy_cloze": {"acc": i / 10}}, prefix="lm_eval")
        tracking.log_eval_metrics(cfg, "shared", {f"w{i}": float(i)}, prefix="passkey")
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def test_eight_processes_log_to_the_embedded_store_without_loss(tiny):
    cfg, path = tiny.config("concurrent")
    # fork: the workers inherit the imported modules (importing MLflow 8 times would dominate
    # the test); they open their own connections, so they contend like separate jobs
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(N_PROCS)
    procs = [ctx.Process(target=_log_worker, args=(str(path), i, barrier)) for i in range(N_PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0] * N_PROCS, "a worker crashed (see its traceback above)"

    points = 0
    for i in range(N_PROCS):
        (run,) = mlflow_runs(cfg, f"w{i}")
        assert run.info.status == "FINISHED"
        for key in TRAIN_KEYS:
            hist = metric_history(cfg, run.info.run_id, key)
            assert [m.step for m in hist] == list(range(1, N_STEPS + 1)), f"w{i} {key}: lost or duplicated points"
            points += len(hist)
        assert run.data.metrics["lm_eval/toy_ppl.ppl"] == 10.0 + i and run.data.metrics["lm_eval/toy_cloze.acc"] == i / 10
        points += 2
    (shared,) = mlflow_runs(cfg, "shared")
    assert sorted(shared.data.metrics) == sorted(f"passkey/w{i}" for i in range(N_PROCS))
    points += len(shared.data.metrics)
    assert points == N_PROCS * (len(TRAIN_KEYS) * N_STEPS + 2) + N_PROCS


# -- a store that is locked, corrupt, read-only, or moved (issue 19, item 4) ------------------------

LOCK_WINDOW_S = 8.0


def test_a_locked_store_delays_no_step_and_loses_no_metric(tiny, monkeypatch, caplog):
    """Another process holds the store with BEGIN EXCLUSIVE for LOCK_WINDOW_S from just after the
    run is opened: each flush gives up within FLUSH_DEADLINE_S (one ERROR line naming the store
    and the holder's pid), steps keep coming, and once the lock is released every point arrives."""
    cfg, _ = tiny.config("locked", steps=24, log_every=2, checkpoint_every=12)
    monkeypatch.setattr(loop, "open_dataset", lambda manifest, split: TinyTokens(delay=0.1))
    db = tracking.db_path(cfg.tracking_uri)
    hold = (f"import sqlite3, time; c = sqlite3.connect({str(db)!r}, isolation_level=None); "
            f"c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep({LOCK_WINDOW_S})")
    holder: list[subprocess.Popen] = []
    real_open, real_record = tracking.TrainingRun.open, loop._Trainer._record
    window: list[float] = []
    stamps: list[float] = []

    def open_then_lock(*a, **kw):
        run = real_open(*a, **kw)
        holder.append(subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True))
        assert holder[0].stdout.readline().strip() == "locked"
        window.append(time.monotonic())
        return run

    def record(self, rec):
        stamps.append(time.monotonic())
        real_record(self, rec)

    monkeypatch.setattr(tracking.TrainingRun, "open", open_then_lock)
    monkeypatch.setattr(loop._Trainer, "_record", record)
    with caplog.at_level(logging.INFO, logger="hades"):
        start = time.monotonic()
        run_id = train(cfg, "tiny")["mlflow_run_id"]
        wall = time.monotonic() - start
    holder[0].wait(timeout=30)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert max(gaps) < loop.FLUSH_DEADLINE_S + 3, f"a step waited {max(gaps):.1f} s on the lock"
    during = [s for s in stamps if window[0] < s < window[0] + LOCK_WINDOW_S]
    assert len(during) >= 3, "training went on while the store was locked"
    assert wall < LOCK_WINDOW_S + 60, wall
    failed = [r.getMessage() for r in caplog.records if "MLflow logging failed" in r.getMessage()]
    assert len(failed) == 1, failed  # once per outage, not at every flush
    assert str(db) in failed[0] and "is locked" in failed[0] and f"pid {holder[0].pid}" in failed[0]
    assert "MLflow logging works again" in caplog.text
    hist = metric_history(cfg, run_id, "train/loss")
    assert [m.step for m in hist] == list(range(1, 25)), "every step once, after the lock was released"


def _garbage(db: Path) -> None:
    db.write_bytes(b"this is not an SQLite file\n" * 100)


def _truncated(db: Path) -> None:
    with open(db, "r+b") as f:
        f.truncate(3000)


@pytest.mark.parametrize("damage", [_garbage, _truncated], ids=["garbage", "truncated"])
def test_a_corrupt_store_stops_training_at_start_in_one_line(tiny, damage):
    cfg, _ = tiny.config(f"corrupt-{damage.__name__}")
    db = tracking.db_path(cfg.tracking_uri)
    damage(db)
    with pytest.raises(tracking.TrackingStoreError) as err:
        train(cfg, "tiny")
    msg = str(err.value)
    assert "\n" not in msg and str(db) in msg, msg
    assert "corrupt (not a database)" in msg and "snakemake --forcerun mlflow_init" in msg, msg
    assert not list((Path(cfg.results_dir) / "checkpoints" / "tiny").glob("step_*")), "stopped before training"


def test_a_read_only_store_stops_training_at_start_in_one_line(tiny):
    cfg, _ = tiny.config("readonly")
    db = tracking.db_path(cfg.tracking_uri)
    if os.geteuid() == 0:  # root writes through permission bits: make the file immutable instead
        if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
            pytest.skip("running as root, and chattr +i is not available here: no way to make the store read-only")
        undo = ["chattr", "-i", str(db)]
    else:
        db.chmod(0o444)
        undo = ["chmod", "644", str(db)]
    try:
        with pytest.raises(tracking.TrackingStoreError) as err:
            train(cfg, "tiny")
    finally:
        subprocess.run(undo, check=True)
    msg = str(err.value)
    assert "\n" not in msg and str(db) in msg and "is read-only" in msg and "tracking.uri" in msg, msg


def test_a_moved_checkout_continues_its_runs_with_artifacts_in_its_own_tree(tiny):
    """Train in checkout A, copy A's whole results directory to B, rerun and evaluate there: the
    experiment and the run point at B's artifacts (A's are left alone), and the model still has
    one run, FINISHED, holding A's history and B's new numbers."""
    cfg_a, _ = tiny.config("A", steps=6, checkpoint_every=3)
    rid = train(cfg_a, "tiny")["mlflow_run_id"]
    a_results = Path(cfg_a.results_dir)
    a_files = sorted(p.relative_to(a_results) for p in (a_results / "mlflow" / "artifacts").rglob("*"))
    b_results = tiny.root / "B" / "results"
    shutil.copytree(a_results, b_results)
    cfg_b = load_config(write_config(tiny.root / "B" / "config.yaml", config_dict(b_results, steps=6, checkpoint_every=3)))

    assert train(cfg_b, "tiny")["mlflow_run_id"] == rid, "the copy continues the same run"
    tracking.log_eval_metrics(cfg_b, "tiny", {"toy": {"acc": 0.5}}, prefix="lm_eval")
    note = tiny.root / "note.txt"
    note.write_text("from B\n")
    tracking.log_artifact(cfg_b, "tiny", note, "eval")

    b_uri = (b_results.resolve() / "mlflow" / "artifacts").as_uri()
    client = tracking._client(cfg_b.tracking_uri)
    assert client.get_experiment_by_name(cfg_b.tracking_experiment).experiment_id == tracking.experiment_id(cfg_b)
    assert client.get_experiment(tracking.experiment_id(cfg_b)).artifact_location == b_uri
    (run,) = mlflow_runs(cfg_b, "tiny", all_stages=False)
    assert run.info.run_id == rid and run.info.status == "FINISHED"
    assert run.info.artifact_uri == f"{b_uri}/{rid}/artifacts"
    assert (b_results / "mlflow" / "artifacts" / rid / "artifacts" / "eval" / "note.txt").read_text() == "from B\n"
    assert sorted(p.relative_to(a_results) for p in (a_results / "mlflow" / "artifacts").rglob("*")) == a_files
    assert len(mlflow_runs(cfg_b, "tiny")) == 1, "no second run, not even a retired one"
    assert [m.step for m in metric_history(cfg_b, rid, "train/loss")] == list(range(1, 7))

    # another copy, retrained from scratch (its checkpoints, and the run-id file, deleted): the
    # new run retires A's, although that one is tagged with A's results directory
    c_results = tiny.root / "C" / "results"
    shutil.copytree(a_results, c_results)
    shutil.rmtree(c_results / "checkpoints" / "tiny")
    cfg_c = load_config(write_config(tiny.root / "C" / "config.yaml", config_dict(c_results, steps=6, checkpoint_every=3)))
    new = train(cfg_c, "tiny")["mlflow_run_id"]
    assert [r.info.run_id for r in mlflow_runs(cfg_c, "tiny", all_stages=False)] == [new], "one run per model"

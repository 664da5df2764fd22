"""MLflow tracking for the pipeline: one store, one experiment, one run per trained model.

Store: `Config.tracking_uri` -- an embedded SQLite file (results/mlflow.db) by default, or a
tracking server (`tracking.uri: http://host:5000`) on clusters, where jobs on many nodes must
not share one SQLite file over NFS.

Lifecycle:
- `init_store(cfg)` creates the database and the experiment exactly once (Snakemake rule
  `mlflow_init`, before any job starts: concurrent first-time creation of an SQLite store runs
  the schema migrations twice and corrupts it). It is also safe to call from many processes:
  creation happens under an exclusive file lock.
- `TrainingRun.open(...)` (used by hades.train) gets or creates the model's run. Its id lives in
  results/checkpoints/{model}/mlflow_run_id, so a resumed job continues the same run and the
  evaluation of that model attaches to it (`log_eval_metrics`). Steps already in the run are
  not logged again (a per-metric watermark read back from the store), so a resume never
  double-logs a step.
- Concurrency: many processes write to one SQLite file. MLflow sets a 20 s busy timeout, but
  SQLite can still answer "database is locked" at once (lock upgrades under contention), so
  every store call goes through `_retry` (exponential backoff with jitter, 5 min deadline).
  Each metric batch is one transaction, so a retried batch is never half-logged. A flush
  during training passes a short deadline instead (`log_metrics(deadline_s=...)`): `_retry`
  lowers MLflow's busy timeout to it, so a store held locked by another process delays a
  step by seconds, not minutes, and the trainer keeps the records for the next flush.
- Failures are one line: `check_store` probes an embedded store before training (corrupt,
  read-only or locked -> `TrackingStoreError`, naming the file and the fix), and
  `describe_failure` names the store and, for a lock, the processes that have it open.
- Artifacts live under the store's own results directory. A checkout that was moved or copied
  keeps a store whose experiment and runs point at the old directory; `experiment_id` and
  `init_store` re-root them (`_reroot_artifacts`) at every start, so the new checkout writes
  its artifacts into its own tree and continues its runs.

MLflow is kept quiet and offline: telemetry off, no network unless a server URI is configured,
its INFO chatter lowered to WARNING.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import logging
import math
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from hades.config import Config, ConfigError, config_hash, flatten
from hades.io import atomic_write_bytes, write_json

log = logging.getLogger("hades.tracking")
T = TypeVar("T")

RUN_ID_FILE = "mlflow_run_id"
_OFFLINE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "_MLFLOW_TELEMETRY_PRE_WARM_DATABRICKS_SDK": "false",
    "GIT_PYTHON_REFRESH": "quiet",
}
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")
# MLflow's experiment kind (the UI's ExperimentKind values): these experiments hold model
# trainings, not GenAI traces. Set on creation and on an existing experiment (a resumed study).
# A UI that picks the view from it (MLflow 3.5.1's, read in its JS bundle) opens the runs table
# without asking for the experiment's type; 3.17.2's ignores it and follows its GenAI / Model
# training switch instead (README "MLflow" gives the link with `?workflowType=machine_learning`).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def configure_offline() -> None:
    """Environment for a quiet, offline MLflow. Must run before `import mlflow` (its telemetry
    decides at import time); every function here calls it first. User settings win."""
    for k, v in _OFFLINE_ENV.items():
        os.environ.setdefault(k, v)


def _mlflow():
    configure_offline()
    import mlflow

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow


# -- paths and provenance ------------------------------------------------------------------


def results_path(cfg: Config, *parts: str) -> Path:
    return Path(cfg.results_dir).joinpath(*parts)


def run_id_path(cfg: Config, grid_id: str) -> Path:
    return results_path(cfg, "checkpoints", grid_id, RUN_ID_FILE)


def store_info_path(cfg: Config) -> Path:
    return results_path(cfg, "mlflow", "experiment.json")


def is_embedded(uri: str) -> bool:
    return uri.startswith("sqlite:")


def db_path(uri: str) -> Path:
    """The file of an embedded store's URI (sqlite:///abs/path or sqlite:///rel/path)."""
    return Path(uri.split("sqlite:///", 1)[-1])


def _artifacts_uri(cfg: Config) -> str:
    return results_path(cfg, "mlflow", "artifacts").resolve().as_uri()


# -- retries -------------------------------------------------------------------------------


def _transient(e: BaseException) -> bool:
    text = f"{type(e).__name__}: {e}".lower()
    return "database is locked" in text or "database table is locked" in text or "busy" in text


# MLflow runs `PRAGMA busy_timeout = 20000` at the start of every session, so one attempt on a
# locked store waits 20 s whatever the caller's deadline. `_retry` lowers it to its deadline for
# the calls of its thread (the engine listener `_busy_timeout_rewrite` edits that statement).
_MLFLOW_BUSY_MS = 20000
_busy = threading.local()


def _busy_timeout_rewrite(conn, cursor, statement, parameters, context, executemany):
    ms = getattr(_busy, "ms", _MLFLOW_BUSY_MS)
    if ms != _MLFLOW_BUSY_MS and statement.lstrip().upper().startswith("PRAGMA BUSY_TIMEOUT"):
        statement = f"PRAGMA busy_timeout = {ms};"
    return statement, parameters


def _retry(fn: Callable[[], T], what: str, deadline_s: float = 300.0) -> T:
    """Call fn until it succeeds; back off on transient store errors (SQLite lock contention).
    No attempt waits on a lock past the deadline (its busy timeout is capped to the time left)."""
    start, delay, attempt = time.monotonic(), 0.05, 0
    outer = getattr(_busy, "ms", _MLFLOW_BUSY_MS)
    try:
        while True:
            attempt += 1
            _busy.ms = min(outer, max(100, int((start + deadline_s - time.monotonic()) * 1000)))
            try:
                return fn()
            except Exception as e:
                if not _transient(e) or time.monotonic() - start > deadline_s:
                    raise
                if attempt in (3, 10, 30):
                    log.warning("MLflow store busy during %s (attempt %d): %s; retrying", what, attempt, str(e).splitlines()[0])
                time.sleep(min(delay * (0.5 + random.random()), max(0.0, start + deadline_s - time.monotonic())))
                delay = min(delay * 2, 2.0)
    finally:
        _busy.ms = outer


@functools.lru_cache(maxsize=8)
def _client(uri: str):
    mlflow = _mlflow()
    client = _retry(lambda: mlflow.MlflowClient(tracking_uri=uri), "opening the store")
    if is_embedded(uri):
        from sqlalchemy import event

        event.listen(client._tracking_client.store.engine, "before_cursor_execute", _busy_timeout_rewrite, retval=True)
    return client


# -- one-line store diagnoses -----------------------------------------------------------------


class TrackingStoreError(ConfigError):
    """The MLflow store cannot be used. A ConfigError, so that every entry point (hades train,
    the Snakemake scripts) reports it as one line, like a config error: the store's path, what
    is wrong and the fix."""


def _holders(path: Path) -> list[str]:
    """'pid N (command)' of the other processes that have the store (or its journal) open:
    who holds a lock, on Linux (/proc); empty elsewhere or when none is visible."""
    names = {str(path.resolve()), f"{path.resolve()}-journal", f"{path.resolve()}-wal"}
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        pid = fd_dir.parent.name
        if pid == str(os.getpid()):
            continue
        try:
            if any(os.readlink(fd) in names for fd in fd_dir.iterdir()):
                cmd = (fd_dir.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append(f"pid {pid} ({cmd[:80]})")
        except OSError:  # gone, or not ours to read
            continue
    return found


def describe_failure(uri: str, e: BaseException) -> str:
    """One line: the store, what is wrong with it and what to do."""
    text = f"{type(e).__name__}: {e}".lower()
    where = db_path(uri) if is_embedded(uri) else uri
    if not is_embedded(uri):
        return f"MLflow store {where} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    if "not a database" in text or "malformed" in text:
        return (f"MLflow store {where} is corrupt (not a database); move it aside (mv {where} {where}.bad) "
                f"and rerun `snakemake --forcerun mlflow_init`, or set tracking.uri to another store")
    if "readonly" in text or "read-only" in text or "unable to open" in text or isinstance(e, PermissionError):
        return (f"MLflow store {where} is read-only (or its directory is); make both writable "
                f"(chmod u+w {where} {where.parent}), or set tracking.uri to a writable store")
    if _transient(e):
        holders = _holders(where)
        by = f"held by {', '.join(holders)}" if holders else "no other process seen holding it"
        return f"MLflow store {where} is locked ({by}); end or wait for that process"
    return f"MLflow store {where} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def check_store(cfg: Config, timeout_s: float = _MLFLOW_BUSY_MS / 1000) -> None:
    """Before training: raise TrackingStoreError (one line) when the embedded store cannot be
    written -- corrupt, read-only, or locked for longer than MLflow's own busy timeout. Uses
    sqlite3 alone (no MLflow import), so it also runs where MLflow is not installed. A missing
    store is created later by `experiment_id`; only its directory must be writable."""
    uri = cfg.tracking_uri
    if not is_embedded(uri):
        return
    path = db_path(uri)
    if not path.exists():
        parent = next(p for p in [path.parent, *path.parent.parents] if p.exists())
        if not os.access(parent, os.W_OK):
            raise TrackingStoreError(describe_failure(uri, PermissionError(f"{parent} is not writable")))
        return
    # SQLite writes a journal beside the file, and root passes the permission bits of both:
    # access(2) still refuses an immutable file or directory (chattr +i) and a read-only mount
    for p in (path, path.parent):
        if not os.access(p, os.W_OK):
            raise TrackingStoreError(describe_failure(uri, PermissionError(f"{p} is not writable")))
    con = None
    try:
        con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=timeout_s, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")  # the write lock: a lock held elsewhere waits here, then fails
        con.execute("SELECT count(*) FROM experiments").fetchone()
        con.rollback()
    except sqlite3.Error as e:
        raise TrackingStoreError(describe_failure(uri, e)) from None
    finally:
        if con is not None:
            con.close()


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# -- store ---------------------------------------------------------------------------------


def init_store(cfg: Config) -> dict[str, str]:
    """Create the store and the experiment once; idempotent and safe under concurrency.

    Writes results/mlflow/experiment.json ({tracking_uri, experiment, experiment_id}) and
    returns the same dict.
    """
    uri, name = cfg.tracking_uri, cfg.tracking_experiment
    with _file_lock(results_path(cfg, "mlflow", ".init.lock")):
        client = _client(uri)
        exp = _retry(lambda: client.get_experiment_by_name(name), "reading the experiment")
        if exp is None:
            artifacts = None
            if is_embedded(uri):  # keep artifacts under results/, not in ./mlruns of the cwd
                artifacts = _artifacts_uri(cfg)
            tags = {"hades.config_name": cfg.name, EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            exp_id = _retry(
                lambda: client.create_experiment(name, artifact_location=artifacts, tags=tags),
                "creating the experiment",
            )
            log.info("created MLflow experiment %r (id %s) in %s", name, exp_id, uri)
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                _retry(lambda: client.restore_experiment(exp_id), "restoring the experiment")
            _mark_kind(client, exp)
            _reroot_artifacts(cfg, exp)
        info = {"tracking_uri": uri, "experiment": name, "experiment_id": str(exp_id)}
        write_json(store_info_path(cfg), info, default=str)
    return info


def _mark_kind(client, exp) -> None:
    """Set the kind on an experiment without it (created before this tag) or with another."""
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        _retry(
            lambda: client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND),
            "tagging the experiment",
        )


def _reroot_artifacts(cfg: Config, exp) -> None:
    """Point an embedded store's experiment, and its runs, at this results directory when they
    point elsewhere: the checkout was moved or copied (the store and the artifacts with it), and
    MLflow records absolute locations, so its runs would write into the old tree. MLflow has no
    API to change a location; its schema's experiments.artifact_location and runs.artifact_uri
    are updated in one transaction (idempotent: a second process finds nothing to change)."""
    if not is_embedded(cfg.tracking_uri):
        return
    old, new = exp.artifact_location, _artifacts_uri(cfg)
    if old == new:
        return
    con = sqlite3.connect(db_path(cfg.tracking_uri), timeout=_MLFLOW_BUSY_MS / 1000, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, int(exp.experiment_id)))
        # a run's artifact_uri is <experiment location>/<run id>/artifacts
        moved = "experiment_id = ? AND substr(artifact_uri, 1, ?) = ?", (int(exp.experiment_id), len(old), old)
        runs = [r for (r,) in con.execute(f"SELECT run_uuid FROM runs WHERE {moved[0]}", moved[1])]
        con.execute(f"UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) WHERE {moved[0]}", (new, len(old) + 1, *moved[1]))
        con.execute("COMMIT")
    except sqlite3.Error as e:
        raise TrackingStoreError(describe_failure(cfg.tracking_uri, e)) from None
    finally:
        con.close()
    # MLflow keeps each run's artifact repository per process, by run id: a process that used the
    # old tree (a test, a notebook) would go on writing there
    from mlflow.tracking._tracking_service import utils

    for rid in runs:
        utils._artifact_repos_cache.pop(rid, None)
    log.warning("MLflow artifacts of experiment %s moved from %s to %s (the results directory moved)", exp.name, old, new)


def experiment_id(cfg: Config) -> str:
    """The experiment's id, creating store and experiment (under the lock) if needed."""
    uri = cfg.tracking_uri
    if is_embedded(uri) and not db_path(uri).exists():
        return init_store(cfg)["experiment_id"]
    exp = _retry(lambda: _client(uri).get_experiment_by_name(cfg.tracking_experiment), "reading the experiment")
    if exp is None or exp.lifecycle_stage != "active":
        return init_store(cfg)["experiment_id"]
    # a resumed study whose mlflow_init ran before the kind was set: Snakemake does not rerun it
    _mark_kind(_client(uri), exp)
    _reroot_artifacts(cfg, exp)
    return exp.experiment_id


# -- metric logging ------------------------------------------------------------------------


def metric_key(key: str) -> str:
    """A name MLflow accepts (lm-eval's 'acc,none' -> 'acc_none')."""
    return _BAD_KEY_CHARS.sub("_", key)


def _log_batch(client, run_id: str, metrics=(), params=(), tags=(), deadline_s: float = 300.0) -> None:
    from mlflow.entities import Metric, Param, RunTag

    metrics = [Metric(metric_key(k), float(v), ts, step) for k, v, ts, step in metrics]
    params = [Param(k, _param_value(v)) for k, v in params]
    tags = [RunTag(k, str(v)) for k, v in tags]
    # MLflow's batch limits: 1000 metrics, 100 params+tags per call.
    for i in range(0, len(metrics), 1000):
        chunk = metrics[i : i + 1000]
        _retry(lambda chunk=chunk: client.log_batch(run_id, metrics=chunk), "logging metrics", deadline_s)
    both = params + tags
    for i in range(0, len(both), 100):
        chunk = both[i : i + 100]
        ps = [x for x in chunk if isinstance(x, Param)]
        ts = [x for x in chunk if isinstance(x, RunTag)]
        _retry(lambda ps=ps, ts=ts: client.log_batch(run_id, params=ps, tags=ts), "logging params", deadline_s)


def _results_tag(cfg: Config) -> str:
    return str(Path(cfg.results_dir).resolve())


def _previous_runs(client, exp_id: str, grid_id: str, results: str | None, recorded, new_id: str) -> list[str]:
    """Active runs that a new training run of grid_id replaces: the one the run-id file named,
    and any other of the same model and results directory (e.g. after the checkpoints
    directory was deleted by hand), so that the experiment keeps one run per model.
    results=None: any results directory (an embedded store belongs to the one it lies in,
    wherever that was when a run was tagged: a moved checkout's runs carry the old path)."""
    from mlflow.entities import ViewType

    found = _retry(
        lambda: client.search_runs(
            [exp_id], filter_string=f"tags.`hades.grid_id` = '{grid_id}'", run_view_type=ViewType.ACTIVE_ONLY, max_results=1000
        ),
        "searching runs",
    )
    ids = {r.info.run_id for r in found if results is None or r.data.tags.get("hades.results_dir") in (results, None)}
    if recorded is not None and recorded.info.lifecycle_stage == "active":
        ids.add(recorded.info.run_id)
    return sorted(ids - {new_id})


def _param_value(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)
    return s[:6000]


def _now_ms() -> int:
    return int(time.time() * 1000)


class TrainingRun:
    """The MLflow run of one model's training (rank 0 only)."""

    def __init__(self, cfg: Config, grid_id: str, run_id: str, watermark: dict[str, int]):
        self.cfg, self.grid_id, self.run_id = cfg, grid_id, run_id
        self.client = _client(cfg.tracking_uri)
        self.watermark = watermark  # metric key -> last step already in the store

    @classmethod
    def open(
        cls,
        cfg: Config,
        grid_id: str,
        *,
        resume_key: str,
        resuming: bool,
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
    ) -> TrainingRun:
        """Continue the model's run when it belongs to the same training (same resume key, and
        either resuming from a checkpoint or not finished yet); otherwise start a new run and
        retire the old one (soft-deleted, tagged `hades.superseded_by`) so the experiment keeps
        one run per model. A store that fails here raises TrackingStoreError (one line): the
        job stops before training rather than train without a run."""
        try:
            return cls._open(cfg, grid_id, resume_key=resume_key, resuming=resuming, params=params, tags=tags)
        except TrackingStoreError:
            raise
        except Exception as e:
            raise TrackingStoreError(describe_failure(cfg.tracking_uri, e)) from e

    @classmethod
    def _open(cls, cfg: Config, grid_id: str, *, resume_key: str, resuming: bool, params, tags) -> TrainingRun:
        client = _client(cfg.tracking_uri)
        exp_id = experiment_id(cfg)
        path = run_id_path(cfg, grid_id)
        old = None
        if path.exists():
            rid = path.read_text().strip()
            try:
                old = _retry(lambda: client.get_run(rid), "reading the run")
            except Exception as e:  # the store was reset, or the id is from another store
                if _transient(e):
                    raise
                log.warning("MLflow run %s from %s not found (%s); starting a new run", rid, path, e)
        if (
            old is not None
            and old.info.lifecycle_stage == "active"
            and old.data.tags.get("hades.resume_key") == resume_key
            and (resuming or old.info.status != "FINISHED")
        ):
            rid = old.info.run_id
            _retry(lambda: client.update_run(rid, status="RUNNING"), "reopening the run")
            wm = {}
            for key in old.data.metrics:
                hist = _retry(lambda key=key: client.get_metric_history(rid, key), "reading metric history")
                wm[key] = max((m.step for m in hist), default=-1)
            log.info("continuing MLflow run %s (%s)", rid, grid_id)
            run = cls(cfg, grid_id, rid, wm)
        else:
            created = _retry(
                lambda: client.create_run(exp_id, run_name=grid_id, tags={"hades.grid_id": grid_id}),
                "creating the run",
            )
            rid = created.info.run_id
            results = None if is_embedded(cfg.tracking_uri) else _results_tag(cfg)
            for prev in _previous_runs(client, exp_id, grid_id, results, old, rid):
                _retry(lambda prev=prev: client.set_tag(prev, "hades.superseded_by", rid), "tagging the old run")
                _retry(lambda prev=prev: client.delete_run(prev), "retiring the old run")
                log.info("MLflow run %s of %s superseded by %s", prev, grid_id, rid)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, (rid + "\n").encode())
            log.info("started MLflow run %s (%s)", rid, grid_id)
            run = cls(cfg, grid_id, rid, {})
        all_tags = {**tags, "hades.resume_key": resume_key, "hades.grid_id": grid_id, "hades.results_dir": _results_tag(cfg)}
        _log_batch(client, rid, params=sorted(params.items()), tags=sorted(all_tags.items()))
        return run

    def log_metrics(self, records: Iterable[tuple[int, Mapping[str, float]]], deadline_s: float = 300.0) -> int:
        """Log (step, {key: value}) records, skipping (key, step) pairs at or below the key's
        watermark (already in the store from before a resume). Returns points logged. Gives up
        after deadline_s on a locked store, raising; the watermark then covers the chunks that
        were logged, so the caller can pass the same records again without duplicates."""
        batch = []
        ts = _now_ms()
        for step, metrics in records:
            for k, v in metrics.items():
                k = metric_key(k)
                if step <= self.watermark.get(k, -1) or v is None or not math.isfinite(float(v)):
                    continue
                batch.append((k, float(v), ts, int(step)))
        for i in range(0, len(batch), 1000):  # MLflow's batch limit; each chunk one transaction
            chunk = batch[i : i + 1000]
            _log_batch(self.client, self.run_id, metrics=chunk, deadline_s=deadline_s)
            for k, _, _, step in chunk:
                self.watermark[k] = max(step, self.watermark.get(k, -1))
        return len(batch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        _log_batch(self.client, self.run_id, tags=sorted(tags.items()))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        _retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path), "logging an artifact")

    def finish(self, status: str = "FINISHED", message: str | None = None) -> None:
        """status: FINISHED, FAILED (divergence, crash) or KILLED (preempted)."""
        if message:
            self.set_tags({"hades.status_message": message[:8000]})
        _retry(lambda: self.client.set_terminated(self.run_id, status), "terminating the run")


# -- helpers for other stages ---------------------------------------------------------------


def model_run_id(cfg: Config, grid_id: str) -> str | None:
    path = run_id_path(cfg, grid_id)
    return path.read_text().strip() if path.exists() else None


def log_eval_metrics(
    cfg: Config, grid_id: str, metrics: Mapping[str, Any], prefix: str, step: int = 0
) -> str:
    """Attach evaluation numbers to the model's training run (so the MLflow table compares
    models side by side). Nested dicts are flattened ('lambada.acc'), keys become
    '<prefix>/<key>' with characters MLflow rejects replaced by '_'; non-numeric values are
    skipped. A (key, step) already holding the same value is not logged twice, so rerunning
    an evaluation does not duplicate points. If the model has no run (trained elsewhere), a
    run tagged with the grid id is created for it. Returns the run id."""
    client = _client(cfg.tracking_uri)
    rid = model_run_id(cfg, grid_id)
    if rid is None:
        path = run_id_path(cfg, grid_id)
        with _file_lock(path.with_name(".mlflow_run_id.lock")):  # stages of one model may race here
            rid = model_run_id(cfg, grid_id)
            if rid is None:
                exp_id = experiment_id(cfg)
                rid = _retry(
                    lambda: client.create_run(exp_id, run_name=grid_id, tags={"hades.grid_id": grid_id, "hades.rule": prefix, "hades.results_dir": _results_tag(cfg)}),
                    "creating the run",
                ).info.run_id
                atomic_write_bytes(path, (rid + "\n").encode())
                _retry(lambda: client.set_terminated(rid, "FINISHED"), "terminating the run")
                log.warning("no training run for %s; logged %s metrics to new run %s", grid_id, prefix, rid)
    ts = _now_ms()
    batch = []
    for k, v in flatten(dict(metrics)).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        key = metric_key(f"{prefix}/{k}")
        hist = _retry(lambda key=key: client.get_metric_history(rid, key), "reading metric history")
        if any(m.step == step and m.value == float(v) for m in hist):
            continue
        batch.append((key, float(v), ts, step))
    _log_batch(client, rid, metrics=batch)
    return rid


def log_artifact(cfg: Config, grid_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Attach a file (e.g. an evaluation's JSON) to the model's run; no-op without a run."""
    rid = model_run_id(cfg, grid_id)
    if rid is None:
        log.warning("no MLflow run for %s; not logging artifact %s", grid_id, path)
        return
    client = _client(cfg.tracking_uri)
    _retry(lambda: client.log_artifact(rid, str(path), artifact_path), "logging an artifact")


def experiment_params(cfg: Config, grid_id: str, experiment: Any = None) -> dict[str, Any]:
    """MLflow params of a training run: the flattened experiment config (model.*, train.*,
    seed, ...) plus the data and tokenizer sections that define what the model saw."""
    exp = experiment if experiment is not None else cfg.experiment(grid_id)
    return flatten(
        {
            **dataclasses.asdict(exp),
            "data": dict(cfg.raw_section("data")),
            "tokenizer": dict(cfg.tokenizer),
        }
    )


__all__ = [
    "TrackingStoreError",
    "TrainingRun",
    "check_store",
    "config_hash",
    "configure_offline",
    "db_path",
    "describe_failure",
    "experiment_id",
    "experiment_params",
    "init_store",
    "log_artifact",
    "log_eval_metrics",
    "metric_key",
    "model_run_id",
    "run_id_path",
]

"""The training loop of every grid id: `train(cfg, grid_id)`.

Recipe (docs/paper.md "Scale and training recipe"): AdamW with no decay on
biases/norms/A_log/D/dt_bias/γ (optim.py), linear warm-up then cosine to min_lr_ratio·lr, grad clip,
next-token CE plus the model's weighted auxiliary losses (HADES: λ1·L_balance + λ2·L_diversity),
bf16 autocast on CUDA, fp32 on CPU.

Determinism: the data of optimizer update `step` is the global batch drawn from (seed, step)
(hades.data.shards); rank r of W trains on rows [r·G/W, (r+1)·G/W), in micro-batches of
`micro_batch`, accumulating G / (micro_batch·W) of them. The global batch and the grouping
into micro-batches therefore do not depend on W, so 1 process and N processes follow the
same loss curve (up to float summation order), and a resumed run sees exactly the batches of
an uninterrupted one (bitwise on CPU).

Reliability (docs/reliability.md):
- one trainer per model: the main process holds an exclusive flock on
  results/checkpoints/{model}/.train.lock for the whole run (`TrainLock`); a second trainer of
  the same model (an orphan of a dead Snakemake still running, say) refuses at once with
  TrainerLocked, exit status EXIT_LOCKED (73). The kernel drops the lock when the holder dies,
  kill -9 included, so it never goes stale;
- checkpoints every `checkpoint_every` updates (checkpoint.py: atomic, checksummed,
  weights_only); a restart resumes from the newest good one, and falls back past a corrupt one;
- metrics.jsonl is restored from the checkpoint's copy on resume (no duplicated or missing
  step), and MLflow skips steps it already holds (hades.tracking);
- SIGTERM/SIGUSR1 (Slurm's warning before a kill) -> checkpoint at the next step boundary,
  exit status EXIT_PREEMPTED (75, EX_TEMPFAIL): "try again", the rerun resumes;
- a non-finite loss or gradient norm stops before the optimizer step, names the step, marks
  the MLflow run FAILED and keeps the last good checkpoint: exit status EXIT_DIVERGED (3).
On success the final model is exported as a Hugging Face directory and every step_* checkpoint
but the newest (the last step's) is deleted. That one stays because the job can still fail
after the export (a `scancel` during the last seconds, a lost node): Snakemake then deletes
final/ and summary.json, and the rerun resumes at the last step and only re-exports, into the
same MLflow run, instead of training again. So `--forcerun train` re-exports too; to retrain
from scratch, delete results/checkpoints/{model}/step_*.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import os
import random
import signal
import socket
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hades import tracking
from hades.config import Config, ConfigError, Experiment, config_hash
from hades.io import atomic_write_bytes, fsync_path, git_info, sha256_file, write_json
from hades.models import build_model

from . import distributed as D
from .checkpoint import (
    LoadedCheckpoint,
    latest_good,
    list_checkpoints,
    load_weights,
    prune,
    read_checkpoint,
    remove_tree,
    replace_dir,
    rng_state,
    save_checkpoint,
    set_rng_state,
    step_dir_name,
    sweep_incomplete,
)
from .optim import build_optimizer, build_scheduler

log = logging.getLogger("hades.train")

EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: temporary failure, rerun (requeue) to resume
EXIT_LOCKED = 73  # sysexits.h EX_CANTCREAT: the model's outputs belong to a trainer still running
# How long a flush during training may wait for a locked MLflow store before it gives up and
# keeps its records for the next flush: tracking may delay a step by this much, no more. The
# final flush (`_finish`) waits as long as any store call (hades.tracking._retry's default).
FLUSH_DEADLINE_S = 3.0
LOCK_FILE = ".train.lock"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# TrainConfig fields that change how a run is recorded, not what it computes: a checkpoint
# written under other values of these is still resumed.
BOOKKEEPING = ("log_every", "checkpoint_every", "keep_checkpoints", "num_threads", "compile", "device", "cuda_graph", "eval_every", "eval_windows")
PREEMPTED_MARKER = "PREEMPTED"


class TrainingDiverged(RuntimeError):
    def __init__(self, step: int, what: str, last_checkpoint: Path | None):
        self.step = step
        kept = f"the last good checkpoint {last_checkpoint} is kept" if last_checkpoint else "no checkpoint was written yet"
        super().__init__(
            f"training diverged at step {step}: {what}; stopped before the optimizer step ({kept}). "
            f"Lower train.lr or raise train.warmup_steps, then rerun."
        )


class Preempted(RuntimeError):
    def __init__(self, step: int, signum: int, checkpoint: Path | None):
        self.step, self.signum, self.checkpoint = step, signum, checkpoint
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (nothing trained yet)"
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after step {step}: {where}; "
            f"exit {EXIT_PREEMPTED} (requeue or rerun to resume)"
        )


class TrainerLocked(RuntimeError):
    def __init__(self, grid_id: str, lock_path: Path, holder: dict[str, Any] | None):
        self.grid_id, self.lock_path, self.holder = grid_id, lock_path, holder
        if holder:
            who = f"PID {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
            todo = f"wait for it or kill PID {holder.get('pid')}; then rerun"
        else:  # locked an instant ago, its holder not written yet
            who = "a process that has not recorded its PID yet"
            todo = f"wait for it or kill the process holding it (`fuser {lock_path}`); then rerun"
        super().__init__(f"model {grid_id}: another trainer is running on it ({lock_path} is locked by {who}); {todo}")


class TrainLock:
    """The exclusive per-model trainer lock: a non-blocking fcntl.flock on `path`, with the
    holder's PID, host and start time written into the file after locking (for the refusal).

    flock, not a PID file: the kernel releases it when the holding process dies, however it
    dies, so there is nothing stale to clean up; a crashed trainer's rerun just takes it. The
    file itself stays (unlinking a lock file races with a process that just opened it)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def _lock(self, grid_id: str) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TrainerLocked(grid_id, self.path, self.holder()) from None
        return fd

    def acquire(self, grid_id: str) -> None:
        """Take the lock for this process, or raise TrainerLocked naming its holder."""
        fd = self._lock(grid_id)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self.fd = fd

    def check(self, grid_id: str) -> None:
        """Raise TrainerLocked if a trainer holds the lock; take nothing (a launcher's early check)."""
        os.close(self._lock(grid_id))

    def holder(self) -> dict[str, Any] | None:
        """What the holder wrote into the lock file, None if nothing (yet) or unreadable."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None


def open_dataset(manifest_path: str | Path, split: str):
    """The token shards of `split` (hades.data.shards.TokenDataset). Tests replace this."""
    from hades.data.shards import TokenDataset

    return TokenDataset(manifest_path, split)


@dataclass(frozen=True)
class TrainPaths:
    """Where one model's training reads and writes (docs/CONTRACTS.md, results layout)."""

    ckpt_root: Path  # step_* (undeclared in Snakemake: survives a failed job), mlflow_run_id
    final_dir: Path
    train_dir: Path
    manifest: Path
    tokenizer: Path

    @classmethod
    def of(cls, cfg: Config, grid_id: str) -> TrainPaths:
        r = Path(cfg.results_dir)
        return cls(
            ckpt_root=r / "checkpoints" / grid_id,
            final_dir=r / "checkpoints" / grid_id / "final",
            train_dir=r / "train" / grid_id,
            manifest=r / "data" / "tokens" / "manifest.json",
            tokenizer=r / "tokenizer" / "tokenizer.json",
        )

    @property
    def metrics(self) -> Path:
        return self.train_dir / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.train_dir / "summary.json"

    @property
    def preempted(self) -> Path:
        return self.ckpt_root / PREEMPTED_MARKER


class MetricsFile:
    """results/train/{model}/metrics.jsonl: one JSON record per optimizer step, appended and
    flushed as it happens. On (re)start it is reset to the checkpoint's copy, which holds
    exactly steps 1..checkpoint step: records written after that checkpoint by a killed run
    are dropped and recomputed, records Snakemake deleted with a failed job's outputs are
    restored."""

    def __init__(self, path: Path):
        self.path = path
        self.f = None

    def reset_to(self, snapshot: Path | None) -> list[dict[str, Any]]:
        """Replace the file by `snapshot` (None: empty) and open it for appending; returns
        the restored records."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = snapshot.read_bytes() if snapshot is not None else b""
        atomic_write_bytes(self.path, data)
        self.f = open(self.path, "a")
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

    def append(self, record: dict[str, Any]) -> None:
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()

    def sync(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())

    def records(self) -> list[dict[str, Any]]:
        """Every record of the file, restored ones included."""
        self.f.flush()
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


class StopSignal:
    """Turns SIGTERM/SIGUSR1 into a flag that the loop checks at each step boundary (a
    checkpoint cannot be written from inside a signal handler). Restores the previous
    handlers on exit, so calling train() in-process leaves the caller's handlers intact."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        self.signum = signum

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


def resume_key(experiment: Experiment, manifest_sha: str | None) -> str:
    """What a checkpoint must match to be resumed: the resolved experiment (vocab filled in)
    without bookkeeping fields, and the token data it trained on."""
    exp = dataclasses.asdict(experiment)
    for k in BOOKKEEPING:
        exp["train"].pop(k, None)
    return config_hash({"experiment": exp, "data": manifest_sha})


def _mlflow_record(rec: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """A metrics.jsonl record as MLflow metrics: (step, {"train/loss": ..., ...})."""
    return rec["step"], {f"train/{k}": v for k, v in rec.items() if k not in ("step", "time_s")}


def _fmt_duration(s: float) -> str:
    s = int(max(0, s))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else (f"{x / 1e3:.1f}K" if x >= 1e3 else f"{x:.0f}")


def next_token_ce(out, targets: torch.Tensor, kernel: str = "auto") -> torch.Tensor:
    """Mean next-token cross-entropy in fp32 of the model output `out` (LMOutput) against
    targets (B*T,). On CUDA with `kernel: auto` the fused Triton op (kernels/cross_entropy:
    reads the bf16 logits once, no fp32 copy of the 16K x 50K logits) on the padded logits
    with n_classes = vocab_size, so that the `[..., :vocab]` slice `out.logits` is not in the
    loss's graph (its backward would zero-fill and copy a gradient of the padded size) --
    provided `out.logits` is still the view of `out.logits_padded` (a forward hook may have
    replaced it); otherwise F.cross_entropy on fp32 logits, the same function
    (tests/gpu/test_cross_entropy.py)."""
    logits = out.logits
    if logits.is_cuda and kernel == "auto":
        from kernels.cross_entropy import cross_entropy

        padded = getattr(out, "logits_padded", None)
        vocab = logits.shape[-1]
        if (padded is not None and padded.shape[:-1] == logits.shape[:-1] and padded.shape[-1] >= vocab
                and padded.data_ptr() == logits.data_ptr() and padded.stride() == logits.stride()):
            return cross_entropy(padded.flatten(0, 1), targets, n_classes=vocab)
        return cross_entropy(logits.flatten(0, 1), targets)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets)


def micro_step(fwd, w: torch.Tensor, *, accum: int, bf16: bool, kernel: str = "auto") -> tuple[torch.Tensor, list[str]]:
    """Forward, loss and backward (scaled by 1/accum) of one micro-batch w (B, T + 1) of token
    ids through `fwd` (the model, or its DDP/compiled wrapper); returns fp64 [loss, ce, aux...]
    (detached) and the aux losses' names in that order. The function graph.py captures: no
    host syncs in here."""
    with torch.autocast(w.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = fwd(w[:, :-1])
    ce = next_token_ce(out, w[:, 1:].flatten(), kernel)
    aux = out.aux_losses or {}
    loss = ce + sum(aux.values()) if aux else ce
    (loss / accum).backward()
    names = sorted(aux)
    return torch.stack([loss.detach(), ce.detach(), *(aux[n].detach() for n in names)]).double(), names


def train(cfg: Config, grid_id: str, *, rule: str = "train") -> dict[str, Any]:
    """Train grid id `grid_id` of `cfg` (resuming if checkpoints exist) and export it.

    Runs as one process, or as every rank under torchrun. Returns the summary (also written
    to results/train/{grid_id}/summary.json). Raises TrainingDiverged, Preempted or
    TrainerLocked (see the module docstring for their exit statuses), ConfigError for an
    inconsistent config.
    """
    exp = cfg.experiment(grid_id)
    info, device = D.init_distributed(exp.train.device)
    lock = TrainLock(TrainPaths.of(cfg, grid_id).ckpt_root / LOCK_FILE)
    try:
        # Only the main process locks, before anything touches the model's files: it is the
        # one that writes them (checkpoints, metrics, MLflow); the other ranks only read, and
        # a lock of their own would collide with rank 0's. They learn the outcome by broadcast,
        # so a refused group stops together instead of waiting in a collective.
        refused = None
        if info.is_main:
            try:
                lock.acquire(grid_id)
            except TrainerLocked as e:
                refused = e
        if D.broadcast_int(info, int(refused is not None), device):
            raise refused or TrainerLocked(grid_id, lock.path, lock.holder())
        with StopSignal() as stop:
            return _Trainer(cfg, grid_id, exp, info, device, stop, rule).run()
    finally:
        lock.release()
        D.shutdown(info)


class _Trainer:
    def __init__(self, cfg: Config, grid_id: str, exp: Experiment, info: D.DistInfo, device: torch.device, stop: StopSignal, rule: str):
        self.cfg, self.grid_id, self.info, self.device, self.stop, self.rule = cfg, grid_id, info, device, stop, rule
        self.tcfg = t = exp.train
        self.paths = TrainPaths.of(cfg, grid_id)
        if t.num_threads > 0:
            torch.set_num_threads(t.num_threads)
        per_rank = t.global_batch // info.world_size
        if t.global_batch % (t.micro_batch * info.world_size):
            raise ConfigError(
                f"{cfg.source}: experiments.{grid_id}.train: global_batch {t.global_batch} is not a multiple of "
                f"micro_batch {t.micro_batch} x {info.world_size} processes"
            )
        self.accum = per_rank // t.micro_batch
        self.bf16 = t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda")
        self.use_graph = self._graph_mode(cfg, grid_id, t, info, device)

        self.data = open_dataset(self.paths.manifest, "train")
        vocab = int(self.data.vocab_size)
        # fixed validation windows (the same every time: a curve, not a sample), on the device
        self.val_windows = None
        if t.eval_every > 0:
            self.val_windows = open_dataset(self.paths.manifest, "val").eval_windows(t.seq_len, t.eval_windows).to(device)
        if self.paths.tokenizer.is_file():
            from hades.data.tokenizer import load_backend

            tok_vocab = load_backend(self.paths.tokenizer)[2]
            if tok_vocab != vocab:
                raise ConfigError(
                    f"{self.paths.tokenizer}: {tok_vocab} tokens, but the token shards in {self.paths.manifest} "
                    f"were made with a {vocab}-token vocabulary; rerun the tokenize rule"
                )
        model_cfg = exp.model
        if model_cfg.vocab_size is None:
            model_cfg = dataclasses.replace(model_cfg, vocab_size=vocab)
        elif model_cfg.vocab_size < vocab:
            raise ConfigError(
                f"{cfg.source}: experiments.{grid_id}.model.vocab_size: {model_cfg.vocab_size} is smaller than "
                f"the tokenizer's {vocab} tokens (set it to null to use the tokenizer's size)"
            )
        self.exp = dataclasses.replace(exp, model=model_cfg)
        self.manifest_sha = sha256_file(self.paths.manifest) if self.paths.manifest.is_file() else None
        self.tokenizer_sha = sha256_file(self.paths.tokenizer) if self.paths.tokenizer.is_file() else None
        self.resume_key = resume_key(self.exp, self.manifest_sha)
        self.git = git_info()
        self.provenance = {
            "grid_id": grid_id,
            "label": exp.label,
            "config_name": cfg.name,
            "config_hash": cfg.hash(),
            "experiment_hash": config_hash(dataclasses.asdict(exp)),
            "resume_key": self.resume_key,
            "git_commit": self.git["commit"],
            "git_dirty": self.git["dirty"],
            "data_manifest_sha256": self.manifest_sha,
            "tokenizer_sha256": self.tokenizer_sha,
        }

        random.seed(exp.seed)
        np.random.seed(exp.seed % 2**32)
        torch.manual_seed(exp.seed)
        if info.is_main:  # a store that cannot be written stops the job here, before any GPU work
            tracking.check_store(cfg)
        self.model = build_model(model_cfg).to(device)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.optimizer = build_optimizer(self.model, t)
        self.scheduler = build_scheduler(self.optimizer, t)

        self.step = 0
        self.tokens = 0
        self.train_time = 0.0
        self.resumes: list[int] = []
        self.last_ckpt: Path | None = None
        self.metrics = MetricsFile(self.paths.metrics) if info.is_main else None
        self.mlrun: tracking.TrainingRun | None = None
        self.pending: list[tuple[int, dict[str, float]]] = []
        self.flush_error: Exception | None = None  # of the failing flushes: reported once per outage
        self.recent: list[dict[str, Any]] = []

    @staticmethod
    def _graph_mode(cfg: Config, grid_id: str, t, info: D.DistInfo, device: torch.device) -> bool:
        """Whether to replay the micro-step as a CUDA graph (train.cuda_graph; graph.py)."""
        if t.cuda_graph is False:
            return False
        blockers = [why for bad, why in (
            (device.type != "cuda", f"the device is {device.type}"),
            (info.enabled, f"{info.world_size} processes (the graph has no DDP all-reduce)"),
            (t.compile, "train.compile is on"),
        ) if bad]
        if blockers and t.cuda_graph is True:
            raise ConfigError(f"{cfg.source}: experiments.{grid_id}.train.cuda_graph: true, but {'; '.join(blockers)}; "
                              f"set it to auto or false")
        if blockers and device.type == "cuda" and info.is_main:
            log.info("%s: train.cuda_graph auto: eager training step (%s)", grid_id, "; ".join(blockers))
        return not blockers

    # -- set-up ------------------------------------------------------------------------------
    def _resume(self) -> LoadedCheckpoint | None:
        root, info = self.paths.ckpt_root, self.info
        ckpt = None
        if info.is_main:
            root.mkdir(parents=True, exist_ok=True)
            sweep_incomplete(root)
            self.paths.preempted.unlink(missing_ok=True)
            ckpt = latest_good(root, map_location="cpu")
            if ckpt is not None and ckpt.config.get("resume_key") != self.resume_key:
                stale = root / "stale" / f"{ckpt.config.get('resume_key')}-{time.strftime('%Y%m%dT%H%M%S')}"
                stale.mkdir(parents=True)
                for _, p in list_checkpoints(root):
                    os.rename(p, stale / p.name)
                log.warning(
                    "%s: the checkpoints in %s were written for another config or data (resume key %s, now %s); "
                    "moved them to %s and training from scratch",
                    self.grid_id, root, ckpt.config.get("resume_key"), self.resume_key, stale,
                )
                ckpt = None
        step = D.broadcast_int(info, ckpt.step if ckpt else 0, self.device)
        if step and not info.is_main:
            ckpt = read_checkpoint(root / step_dir_name(step), map_location="cpu")
        if ckpt is None:
            return None
        load_weights(ckpt, self.model, self.device)
        self.optimizer.load_state_dict(ckpt.optimizer)
        tr = ckpt.trainer
        self.scheduler.load_state_dict(tr["scheduler"])
        rngs = tr["rng"]
        if len(rngs) == info.world_size:
            set_rng_state(rngs[info.rank])
        else:  # resumed on another number of processes: RNG streams of extra ranks restart
            set_rng_state(rngs[min(info.rank, len(rngs) - 1)])
        self.step, self.tokens, self.train_time = ckpt.step, int(tr["tokens"]), float(tr["train_time_s"])
        self.resumes = [*tr["resumes"], ckpt.step]
        self.last_ckpt = ckpt.path
        return ckpt

    def _checkpoint_config(self) -> dict[str, Any]:
        return {
            **self.provenance,
            "experiment": dataclasses.asdict(self.exp),
            "pipeline_config": dict(self.cfg.raw),
        }

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t, info = self.tcfg, self.info
        ckpt = self._resume()
        if info.is_main:
            restored = self.metrics.reset_to(ckpt.metrics_file if ckpt else None)
            self.recent = restored[-self.tcfg.log_every :]
            self.mlrun = tracking.TrainingRun.open(
                self.cfg,
                self.grid_id,
                resume_key=self.resume_key,
                resuming=ckpt is not None,
                params=tracking.experiment_params(self.cfg, self.grid_id, self.exp),
                tags={
                    "mlflow.source.git.commit": self.git["commit"],
                    "hades.git_commit": self.git["commit"],
                    "hades.git_dirty": self.git["dirty"],
                    "hades.config_hash": self.provenance["config_hash"],
                    "hades.experiment_hash": self.provenance["experiment_hash"],
                    "hades.config_name": self.cfg.name,
                    "hades.rule": self.rule,
                    "hades.label": self.exp.label,
                    "hades.table": self.exp.table,
                    "hades.data_manifest_sha256": self.manifest_sha,
                    "hades.world_size": info.world_size,
                    "hades.device": self.device.type,
                    "hades.n_params": self.n_params,
                    "hades.cuda_graph": self.use_graph,
                },
            )
            # records of the restored steps that never reached the store (it was unreachable
            # at the last flush before the crash); the run's watermark skips the others
            self.pending = [_mlflow_record(r) for r in restored]
            self._flush_mlflow()
        log.info(
            "%s: %s, %.2fM params, %s x%d, %d steps of %d x %d tokens (micro-batch %d, %d accumulation steps)%s",
            self.grid_id, self.exp.model.arch, self.n_params / 1e6, self.device.type, info.world_size,
            t.steps, t.global_batch, t.seq_len, t.micro_batch, self.accum,
            f", resuming from {ckpt.path} (step {ckpt.step})" if ckpt else "",
        )
        if ckpt is not None and self.step >= t.steps:
            log.info("%s: training was already complete at step %d; exporting it again", self.grid_id, self.step)
        ddp = self.model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        fwd = torch.compile(ddp) if t.compile else ddp
        self.graph = None
        if self.use_graph:
            from .graph import GraphedMicroStep

            self.graph = GraphedMicroStep(self.model, lambda w: self._micro_step(fwd, w), self.device,
                                          strict=t.cuda_graph is True, label=self.grid_id)
        try:
            self._loop(ddp, fwd)
            return self._finish()
        except Preempted as e:
            self._end_run("KILLED", str(e))
            raise
        except TrainingDiverged as e:
            log.error("%s: %s", self.grid_id, e)
            self._end_run("FAILED", str(e))
            raise
        except BaseException as e:
            self._end_run("FAILED", f"{type(e).__name__}: {e}")
            raise
        finally:
            if self.metrics is not None:
                self.metrics.close()

    def _micro_step(self, fwd, w: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        return micro_step(fwd, w, accum=self.accum, bf16=self.bf16, kernel=self.exp.model.kernel)

    def _loop(self, ddp, fwd) -> None:
        t, info, dev = self.tcfg, self.info, self.device
        window_t, window_steps = 0.0, 0
        first = self.step + 1
        while self.step < t.steps:
            stop = torch.tensor([float(self.stop.signum or 0)], device=dev)
            if int(D.all_reduce_(info, stop, "max").item()):
                self._preempt(int(stop.item()))
            t0 = time.perf_counter()
            k = self.step + 1  # this update's number; metrics and checkpoints are labelled by it
            starts = self.data.global_batch_starts(self.exp.seed, self.step, t.global_batch, t.seq_len)
            per = t.global_batch // info.world_size
            mine = starts[info.rank * per : (info.rank + 1) * per]
            graph = self.graph
            if graph is not None:
                graph.zero_grad()
            stats = None  # fp64 [loss, ce, aux...] summed over the micro-batches
            for i in range(self.accum):
                w = torch.as_tensor(self.data.windows(mine[i * t.micro_batch : (i + 1) * t.micro_batch], t.seq_len))
                if graph is not None:
                    graph(w)  # eager for the first few micro-batches, then the replayed capture
                    continue
                w = w.to(dev, non_blocking=True)
                sync = nullcontext() if (i == self.accum - 1 or not info.enabled) else ddp.no_sync()
                with sync:
                    s, names = self._micro_step(fwd, w)
                stats = s if stats is None else stats + s
            if graph is not None:
                stats, names = graph.stats()
            stats = D.all_reduce_(info, stats) / (self.accum * info.world_size)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf"))
            loss_v, ce_v = float(stats[0]), float(stats[1])
            gn = float(grad_norm)
            if not math.isfinite(loss_v) or not math.isfinite(gn):
                what = f"loss = {loss_v}" if not math.isfinite(loss_v) else f"gradient norm = {gn} (loss {loss_v:.4f})"
                self._flush_mlflow()
                raise TrainingDiverged(k, what, self.last_ckpt)
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            if graph is None:  # (the graph's gradients are fixed buffers, zeroed at the step's start)
                self.optimizer.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            dt = time.perf_counter() - t0
            self.step = k
            self.tokens += t.global_batch * t.seq_len
            self.train_time += dt
            window_t, window_steps = window_t + dt, window_steps + 1
            rec = {"step": k, "loss": loss_v, "ce": ce_v}
            rec.update({f"aux/{n}": float(stats[2 + j]) for j, n in enumerate(names)})
            rec.update({"lr": lr, "grad_norm": gn, "tokens": self.tokens, "tokens_per_s": t.global_batch * t.seq_len / dt, "time_s": self.train_time})
            if self.val_windows is not None and (k % t.eval_every == 0 or k == t.steps):
                rec["val_loss"] = self._validate()
            self._record(rec)
            if k % t.log_every == 0 or k == t.steps or k == first:
                rate = window_steps * t.global_batch * t.seq_len / max(window_t, 1e-9)
                eta = (t.steps - k) * window_t / window_steps
                aux_txt = "".join(f" {n} {rec[f'aux/{n}']:.4f}" for n in names)
                if "val_loss" in rec:
                    aux_txt += f" | val {rec['val_loss']:.4f}"
                log.info(
                    "%s step %d/%d | loss %.4f | ce %.4f%s | lr %.2e | grad %.3f | %s tok/s | ETA %s",
                    self.grid_id, k, t.steps, loss_v, ce_v, aux_txt, lr, gn, _fmt_rate(rate), _fmt_duration(eta),
                )
                window_t, window_steps = 0.0, 0
                self._flush_mlflow()
            if k % t.checkpoint_every == 0 or k == t.steps:
                self._save()

    @torch.no_grad()
    def _validate(self) -> float:
        """Mean next-token CE over the fixed validation windows (every rank computes the same
        number on its own copy of the model: no collective needed, no DDP hooks)."""
        t, total = self.tcfg, 0.0
        for w in self.val_windows.split(t.micro_batch):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model(w[:, :-1])
            total += float(next_token_ce(out, w[:, 1:].flatten(), self.exp.model.kernel)) * w.shape[0]
        return total / self.val_windows.shape[0]

    def _record(self, rec: dict[str, Any]) -> None:
        if not self.info.is_main:
            return
        self.metrics.append(rec)
        self.recent = (self.recent + [rec])[-self.tcfg.log_every :]
        self.pending.append(_mlflow_record(rec))

    def _flush_mlflow(self, deadline_s: float = FLUSH_DEADLINE_S) -> None:
        """Send buffered metrics; a store outage (or a lock held elsewhere past deadline_s) is
        reported once, in one line, and the records kept for the next flush (training is not
        stopped or stalled by tracking)."""
        if self.mlrun is None or not self.pending:
            return
        try:
            self.mlrun.log_metrics(self.pending, deadline_s=deadline_s)
        except Exception as e:
            if self.flush_error is None:
                log.error("MLflow logging failed at step %d: %s; keeping %d records for the next flush, training goes on",
                          self.step, tracking.describe_failure(self.cfg.tracking_uri, e), len(self.pending))
            self.flush_error = e
            return
        if self.flush_error is not None:
            log.info("MLflow logging works again at step %d; the %d buffered records are logged", self.step, len(self.pending))
        self.pending, self.flush_error = [], None

    def _save(self) -> Path | None:
        rngs = D.gather_objects(self.info, rng_state())  # collective: every rank calls it
        path = None
        if self.info.is_main:
            self.metrics.sync()
            path = save_checkpoint(
                self.paths.ckpt_root,
                self.step,
                model=self.model,
                optimizer=self.optimizer,
                trainer_state={
                    "scheduler": self.scheduler.state_dict(),
                    "rng": rngs,
                    "tokens": self.tokens,
                    "train_time_s": self.train_time,
                    "resumes": self.resumes,
                    "resume_key": self.resume_key,
                },
                config=self._checkpoint_config(),
                metrics_file=self.paths.metrics,
                keep=self.tcfg.keep_checkpoints,
            )
            self.last_ckpt = path
            log.info("%s: checkpoint %s", self.grid_id, path)
            self._flush_mlflow()
        D.barrier(self.info)
        return path

    def _preempt(self, signum: int) -> None:
        path = None
        if self.step > 0:
            path = self.last_ckpt if self.last_ckpt and self.last_ckpt.name == step_dir_name(self.step) else self._save()
        if self.info.is_main:
            write_json(self.paths.preempted, {"step": self.step, "signal": signal.Signals(signum).name, "checkpoint": str(path)}, default=str)
            self._flush_mlflow()
        err = Preempted(self.step, signum, path)
        log.warning("%s: %s", self.grid_id, err)
        raise err

    def _end_run(self, status: str, message: str) -> None:
        if self.mlrun is None:
            return
        self._flush_mlflow()
        try:
            self.mlrun.finish(status, message)
        except Exception as e:  # never mask the original error with a tracking error
            log.error("could not mark MLflow run %s %s: %s", self.mlrun.run_id, status, e)

    # -- the end -------------------------------------------------------------------------------
    def _finish(self) -> dict[str, Any]:
        info = self.info
        summary = None
        if info.is_main:
            self._export()
            n = len(self.recent)
            mean = {k: sum(r[k] for r in self.recent) / n for k in self.recent[-1] if k in ("loss", "ce") or k.startswith("aux/")} if n else {}
            summary = {
                **self.provenance,
                "table": self.exp.table,
                "paper_key": self.exp.paper_key,
                "arch": self.exp.model.arch,
                "status": "completed",
                "steps": self.step,
                "tokens": self.tokens,
                "n_params": self.n_params,
                "final_loss": mean.get("loss"),
                "final_ce": mean.get("ce"),
                **self._val_summary(),
                "final_aux": {k[4:]: v for k, v in mean.items() if k.startswith("aux/")},
                "final_window_steps": n,
                "train_time_s": self.train_time,
                "tokens_per_s": self.tokens / self.train_time if self.train_time else None,
                "resumed_from": self.resumes,
                "world_size": info.world_size,
                "device": self.device.type,
                "cuda_graph": bool(self.graph is not None and self.graph.captured),
                "checkpoint": str(self.paths.final_dir),
                "metrics": str(self.paths.metrics),
                "mlflow_run_id": self.mlrun.run_id,
                "tracking_uri": self.cfg.tracking_uri,
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            self.paths.train_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.paths.summary, summary, default=str)
            self.metrics.sync()
            self._flush_mlflow(deadline_s=300.0)
            if self.pending:
                raise tracking.TrackingStoreError(
                    f"{len(self.pending)} metric records could not be logged to MLflow "
                    f"({tracking.describe_failure(self.cfg.tracking_uri, self.flush_error)}); "
                    f"rerun to retry: the model is exported and the rerun only logs them"
                )
            self.mlrun.set_tags({"hades.final_loss": summary["final_loss"], "hades.steps": self.step})
            self.mlrun.log_artifact(self.paths.summary, "train")
            self.mlrun.log_artifact(self.paths.final_dir / "pipeline.json", "train")
            self.mlrun.log_artifact(self.paths.final_dir / "config.json", "train")
            self.mlrun.finish("FINISHED")
            # the export is complete and recorded: keep only the last step's checkpoint, which lets
            # a rerun re-export instead of retrain if the job still fails (module docstring)
            prune(self.paths.ckpt_root, keep=1)
            log.info(
                "%s: done, %d steps, final loss %s, model %s, summary %s",
                self.grid_id, self.step, summary["final_loss"], self.paths.final_dir, self.paths.summary,
            )
        D.barrier(info)
        return summary or {}

    def _val_summary(self) -> dict[str, Any]:
        """The last and the lowest validation loss of the run (from metrics.jsonl, resumes included)."""
        if self.val_windows is None:
            return {}
        vals = [(r["val_loss"], r["step"]) for r in self.metrics.records() if "val_loss" in r]
        if not vals:
            return {}
        best = min(vals)
        return {"final_val_loss": vals[-1][0], "best_val_loss": best[0], "best_val_step": best[1]}

    def _export(self) -> None:
        """results/checkpoints/{model}/final/: a Hugging Face directory (config.json,
        model.safetensors, tokenizer files) plus pipeline.json, written to a temporary
        directory and renamed into place."""
        final = self.paths.final_dir
        tmp = final.with_name(f".tmp-final-{os.getpid()}")
        if tmp.exists():
            remove_tree(tmp)
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a progress bar per export would clutter the job log
        try:
            self.model.save_pretrained(str(tmp))
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        if self.paths.tokenizer.is_file():
            from hades.data.tokenizer import load_tokenizer

            load_tokenizer(self.paths.tokenizer).save_pretrained(str(tmp))
        else:
            log.warning("%s: no tokenizer at %s; the final directory has no tokenizer files", self.grid_id, self.paths.tokenizer)
        write_json(
            tmp / "pipeline.json",
            {
                **self.provenance,
                "steps": self.step,
                "tokens": self.tokens,
                "mlflow_run_id": self.mlrun.run_id,
                "tracking_uri": self.cfg.tracking_uri,
                "torch_version": torch.__version__,
                "experiment": dataclasses.asdict(self.exp),
                "pipeline_config": dict(self.cfg.raw),
            },
            default=str,
        )
        for f in tmp.iterdir():
            fsync_path(f)
        fsync_path(tmp)
        replace_dir(tmp, final)  # an export of a resumed run replaces the last one

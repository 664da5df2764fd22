"""How a training process is launched and how it ends: the one mapping of outcomes to exit
statuses, shared by `python -m hades.train` / `hades train` (cli.py) and the pipeline's rule
`train` (workflow/scripts/train.py calls `rule_train`).

Exit statuses: 0 done; 2 config error; 3 diverged (EXIT_DIVERGED: non-finite loss, the last good
checkpoint kept); 73 another trainer of the model is still running (EXIT_LOCKED: its lock,
results/checkpoints/{model}/.train.lock: wait for it or kill it, then rerun); 75 preempted by
SIGTERM/SIGUSR1 after saving a checkpoint (EXIT_PREEMPTED: rerun or requeue to resume).

Rule `train` runs one process by default; with more than one GPU in the job (resource `gpu`, or
`gpus`) and CUDA available, `torchrun --standalone --nproc_per_node <GPUs>` runs the same entry
point (`python -m hades.train`) on a copy of the job's config.

Inside a Slurm job (SLURM_JOB_ID set, `srun` on PATH) the trainer runs as its own job step,
`srun --overlap --ntasks=1 python -m hades.train ...` (or torchrun), so that Slurm's signals
reach it: Slurm's proctrack/cgroup signals only the processes a step's slurmstepd started
(the step's tasks) with anything but SIGKILL, and under snakemake-executor-plugin-slurm that
task is the job-step Snakemake, which does not forward SIGTERM to the rule's process. As a
task of its own step the trainer gets `scancel -s TERM`, the `--signal=TERM@<s>` that the
profile requests before the time limit, a preemption's and the time limit's SIGTERM, and
checkpoints (docs/cluster.md "Preemption and time limits"). HADES_TRAIN_SRUN=0 turns this off.

Snakemake deletes a job's declared log before it reruns the job, so the log of a crashed or
killed attempt (its traceback, the step it reached) would be gone once the rerun starts. The
rule therefore also writes every line to <log>.attempts.log beside it: undeclared, only appended
to, one "attempt started" line per job (docs/reliability.md, section 12).

torch is imported only once a config has been read: a bad config is reported in under a second.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

EXIT_CONFIG = 2

log = logging.getLogger("hades.train")


def train_status(cfg, grid_id: str, rule: str = "train",
                 on_error: Callable[[BaseException], None] | None = None) -> int:
    """Train `grid_id` in this process and return the exit status of how it ended. A config
    error or a refusal by the model's lock is logged as one line (and passed to `on_error`)."""
    from hades.config import ConfigError

    from .loop import (
        EXIT_DIVERGED,
        EXIT_LOCKED,
        EXIT_PREEMPTED,
        Preempted,
        TrainerLocked,
        TrainingDiverged,
        train,
    )

    try:
        train(cfg, grid_id, rule=rule)
    except (ConfigError, TrainerLocked) as e:
        log.error("%s", e)
        if on_error is not None:
            on_error(e)
        return EXIT_CONFIG if isinstance(e, ConfigError) else EXIT_LOCKED
    except TrainingDiverged:
        return EXIT_DIVERGED  # already reported by the loop
    except Preempted:
        return EXIT_PREEMPTED
    return 0


def own_slurm_step() -> bool:
    """Run the trainer as a job step of its own: inside a Slurm job, unless HADES_TRAIN_SRUN=0."""
    if not os.environ.get("SLURM_JOB_ID") or os.environ.get("HADES_TRAIN_SRUN", "1") == "0":
        return False
    if shutil.which("srun") is None:
        log.warning("inside Slurm job %s but no srun on PATH: Slurm's signals will not reach the trainer", os.environ["SLURM_JOB_ID"])
        return False
    return True


def job_gpus(resources: Mapping[str, Any]) -> int:
    """Trainer processes for the job's resources: its `gpu` (or `gpus`) count when CUDA is there
    and there is more than one (capped at the GPUs it sees), else 1."""
    n_gpus = int(resources.get("gpu", 0) or resources.get("gpus", 0) or 0)
    import torch

    if n_gpus > 1 and torch.cuda.is_available():
        if torch.cuda.device_count() < n_gpus:
            log.warning("the job asked for %d GPUs but sees %d", n_gpus, torch.cuda.device_count())
            n_gpus = torch.cuda.device_count()
    else:
        n_gpus = 1
    return n_gpus


def subprocess_train(cfg, grid_id: str, n_gpus: int, srun: bool, log_files: list[str]) -> int:
    """Run the trainer as a child process (torchrun when n_gpus > 1, inside its own Slurm job
    step when `srun`), its output copied into each of `log_files`; forward SIGTERM/SIGUSR1 to it
    (it checkpoints at the next step boundary) and map a preemption to EXIT_PREEMPTED, a refusal
    by the model's lock to EXIT_LOCKED."""
    import yaml

    from hades.io import atomic_write_bytes

    from .loop import EXIT_DIVERGED, EXIT_LOCKED, EXIT_PREEMPTED, LOCK_FILE, TrainLock, TrainPaths

    paths = TrainPaths.of(cfg, grid_id)
    lock = TrainLock(paths.ckpt_root / LOCK_FILE)
    # refuse before rewriting the running trainer's config copy and marker, or starting
    # torchrun/srun; the trainer's rank 0 then takes the lock itself (hades.train.loop.train)
    lock.check(grid_id)
    cfg_file = paths.ckpt_root / "pipeline_config.yaml"  # the job's config, overrides included
    atomic_write_bytes(cfg_file, yaml.safe_dump(dict(cfg.raw), sort_keys=False).encode())
    cmd = [sys.executable, "-m", "hades.train", "--config", str(cfg_file), "--model", grid_id]
    if n_gpus > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n_gpus)]
    if srun:
        # one task on this node, sharing the job's CPUs, memory and GPUs with the running step
        cmd = ["srun", "--overlap", "--ntasks=1", "--nodes=1", f"--job-name=train-{grid_id}", *cmd]
    paths.preempted.unlink(missing_ok=True)  # a marker left by an earlier job is not this one's
    log.info("launching %s", " ".join(cmd))
    outs = [open(f, "ab") for f in log_files]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def copy_output():  # the child's lines into every log, as they come
            for line in proc.stdout:
                for f in outs:
                    f.write(line)
                    f.flush()

        copier = threading.Thread(target=copy_output, daemon=True)
        copier.start()
        forwarded = set()

        def forward(signum, frame):
            if signum not in forwarded:  # torchrun/srun handle one; a second would cut their shutdown short
                forwarded.add(signum)
                proc.send_signal(signum)

        for s in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(s, forward)
        rc = proc.wait()
        copier.join()
    finally:
        for f in outs:
            f.close()
    if rc != 0 and paths.preempted.exists():
        return EXIT_PREEMPTED
    if rc not in (0, EXIT_LOCKED):
        lock.check(grid_id)  # torchrun reports a worker's 73 as 1: a trainer that won the race since
    if srun and rc not in (0, EXIT_CONFIG, EXIT_DIVERGED, EXIT_LOCKED):
        log.error(
            "srun exited with status %d; if it could not start the step (srun's error is above), "
            "HADES_TRAIN_SRUN=0 runs the trainer inside the job's step instead (Slurm's signals then "
            "do not reach it)", rc,
        )
    return rc


def rule_train(config: Mapping[str, Any], grid_id: str, log_file: str, resources: Mapping[str, Any]) -> int:
    """Rule `train`'s job: train `grid_id` of the job's `config`, logging to `log_file` and its
    attempts log, in this process or through torchrun/srun (module docstring); returns the exit
    status. A config error or a held lock is also one line `error: train <model>: ...` on stderr
    (Snakemake's console)."""
    from hades.config import load_config

    from .loop import EXIT_LOCKED, TrainerLocked

    attempts_log = log_file.removesuffix(".log") + ".attempts.log"
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(log_file), logging.FileHandler(attempts_log)],
    )
    log.info("attempt started: rule train, model %s, pid %d, host %s", grid_id, os.getpid(), os.uname().nodename)

    def to_console(e: BaseException) -> None:
        print(f"error: train {grid_id}: {e}", file=sys.stderr)

    try:
        cfg = load_config(config)
        n_gpus = job_gpus(resources)
        srun = own_slurm_step()
        if n_gpus > 1 or srun:
            return subprocess_train(cfg, grid_id, n_gpus, srun, [log_file, attempts_log])
        return train_status(cfg, grid_id, rule="train", on_error=to_console)
    except TrainerLocked as e:  # the launcher's check in subprocess_train
        log.error("%s", e)
        to_console(e)
        return EXIT_LOCKED
    except Exception:
        log.exception("rule train failed")
        raise


__all__ = ["EXIT_CONFIG", "job_gpus", "own_slurm_step", "rule_train", "subprocess_train", "train_status"]

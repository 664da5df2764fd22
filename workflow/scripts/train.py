"""Rule `train` (workflow/rules/train.smk): hades.train.train for one grid id.

One process by default; with more than one GPU in the job (resource `gpu`, or `gpus`) and
CUDA available, `torchrun --standalone --nproc_per_node <GPUs>` runs the same entry point
(`python -m hades.train`) on a copy of the job's config. Exit status 75 = preempted after a
checkpoint (rerun to resume), 73 = another trainer of the model is still running (its lock,
results/checkpoints/{model}/.train.lock: wait for it or kill it, then rerun), 3 = diverged,
2 = config error.

Inside a Slurm job (SLURM_JOB_ID set, `srun` on PATH) the trainer runs as its own job step,
`srun --overlap --ntasks=1 python -m hades.train ...` (or torchrun), so that Slurm's signals
reach it: Slurm's proctrack/cgroup signals only the processes a step's slurmstepd started
(the step's tasks) with anything but SIGKILL, and under snakemake-executor-plugin-slurm that
task is the job-step Snakemake, which does not forward SIGTERM to the rule's process. As a
task of its own step the trainer gets `scancel -s TERM`, the `--signal=TERM@<s>` that the
profile requests before the time limit, a preemption's and the time limit's SIGTERM, and
checkpoints (docs/cluster.md "Preemption and time limits"). HADES_TRAIN_SRUN=0 turns this off.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading

import yaml

from hades.config import ConfigError, load_config
from hades.train.loop import EXIT_LOCKED, TrainerLocked

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
# Snakemake deletes a job's declared log before it reruns the job, so the log of a crashed or
# killed attempt (its traceback, the step it reached) would be gone once the rerun starts.
# Every line therefore also goes to <log>.attempts.log beside it: undeclared, only appended to,
# one "attempt started" line per job (docs/reliability.md, section 12).
ATTEMPTS_LOG = sm.log[0].removesuffix(".log") + ".attempts.log"
logging.basicConfig(
    level=logging.INFO,
    format="%(asctime)s %(name)s %(levelname)s %(message)s",
    handlers=[logging.FileHandler(sm.log[0]), logging.FileHandler(ATTEMPTS_LOG)],
)
log = logging.getLogger("hades.train")
grid_id = sm.wildcards.model
log.info("attempt started: rule train, model %s, pid %d, host %s", grid_id, os.getpid(), os.uname().nodename)


def own_slurm_step() -> bool:
    """Run the trainer as a job step of its own: inside a Slurm job, unless HADES_TRAIN_SRUN=0."""
    if not os.environ.get("SLURM_JOB_ID") or os.environ.get("HADES_TRAIN_SRUN", "1") == "0":
        return False
    if shutil.which("srun") is None:
        log.warning("inside Slurm job %s but no srun on PATH: Slurm's signals will not reach the trainer", os.environ["SLURM_JOB_ID"])
        return False
    return True


def subprocess_train(cfg, n_gpus: int, srun: bool) -> int:
    """Run the trainer as a child process (torchrun when n_gpus > 1, inside its own Slurm job
    step when `srun`); forward SIGTERM/SIGUSR1 to it (it checkpoints at the next step boundary)
    and map a preemption to EXIT_PREEMPTED, a refusal by the model's lock to EXIT_LOCKED."""
    from hades.io import atomic_write_bytes
    from hades.train.loop import (
        EXIT_DIVERGED,
        EXIT_LOCKED,
        EXIT_PREEMPTED,
        LOCK_FILE,
        TrainLock,
        TrainPaths,
    )

    paths = TrainPaths.of(cfg, grid_id)
    lock = TrainLock(paths.ckpt_root / LOCK_FILE)
    # refuse before rewriting the running trainer's config copy and marker, or starting
    # torchrun/srun; the trainer's rank 0 then takes the lock itself (hades.train.loop.train)
    lock.check(grid_id)
    cfg_file = paths.ckpt_root / "pipeline_config.yaml"  # the job's config, overrides included
    atomic_write_bytes(cfg_file, yaml.safe_dump(dict(sm.config), sort_keys=False).encode())
    cmd = [sys.executable, "-m", "hades.train", "--config", str(cfg_file), "--model", grid_id]
    if n_gpus > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n_gpus)]
    if srun:
        # one task on this node, sharing the job's CPUs, memory and GPUs with the running step
        cmd = ["srun", "--overlap", "--ntasks=1", "--nodes=1", f"--job-name=train-{grid_id}", *cmd]
    paths.preempted.unlink(missing_ok=True)  # a marker left by an earlier job is not this one's
    log.info("launching %s", " ".join(cmd))
    with open(sm.log[0], "ab") as out, open(ATTEMPTS_LOG, "ab") as attempts:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def copy_output():  # the child's lines into both logs, as they come
            for line in proc.stdout:
                for f in (out, attempts):
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
    if rc != 0 and paths.preempted.exists():
        return EXIT_PREEMPTED
    if rc not in (0, EXIT_LOCKED):
        lock.check(grid_id)  # torchrun reports a worker's 73 as 1: a trainer that won the race since
    if srun and rc not in (0, 2, EXIT_DIVERGED, EXIT_LOCKED):
        log.error(
            "srun exited with status %d; if it could not start the step (srun's error is above), "
            "HADES_TRAIN_SRUN=0 runs the trainer inside the job's step instead (Slurm's signals then "
            "do not reach it)", rc,
        )
    return rc


try:
    cfg = load_config(sm.config)
    n_gpus = int(sm.resources.get("gpu", 0) or sm.resources.get("gpus", 0) or 0)
    import torch

    if n_gpus > 1 and torch.cuda.is_available():
        if torch.cuda.device_count() < n_gpus:
            log.warning("the job asked for %d GPUs but sees %d", n_gpus, torch.cuda.device_count())
            n_gpus = torch.cuda.device_count()
    else:
        n_gpus = 1
    srun = own_slurm_step()
    if n_gpus > 1 or srun:
        sys.exit(subprocess_train(cfg, n_gpus, srun))

    from hades.train import EXIT_DIVERGED, EXIT_PREEMPTED, Preempted, TrainingDiverged, train

    try:
        train(cfg, grid_id, rule="train")
    except ConfigError as e:
        log.error("%s", e)
        sys.exit(f"error: train {grid_id}: {e}")
    except TrainingDiverged:
        sys.exit(EXIT_DIVERGED)
    except Preempted:
        sys.exit(EXIT_PREEMPTED)
except TrainerLocked as e:  # from train() or the launcher's check in subprocess_train
    log.error("%s", e)
    print(f"error: train {grid_id}: {e}", file=sys.stderr)  # also on Snakemake's console
    sys.exit(EXIT_LOCKED)
except Exception:
    log.exception("rule train failed")
    raise

"""Rule `train` (workflow/rules/train.smk): hades.train.train for one grid id.

One process by default; with more than one GPU in the job (resource `gpu`, or `gpus`) and
CUDA available, `torchrun --standalone --nproc_per_node <GPUs>` runs the same entry point
(`python -m hades.train`) on a copy of the job's config. Exit status 75 = preempted after a
checkpoint (rerun to resume), 3 = diverged, 2 = config error.
"""

import logging
import signal
import subprocess
import sys

import yaml

from hades.config import ConfigError, load_config

sm = snakemake  # noqa: F821 (injected by Snakemake's `script:` directive)
logging.basicConfig(
    filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
log = logging.getLogger("hades.train")
grid_id = sm.wildcards.model


def torchrun(cfg, n_gpus: int) -> int:
    """Run the trainer under torchrun; forward SIGTERM/SIGUSR1 to it (it stops its workers,
    which checkpoint at the next step boundary) and map a preemption to EXIT_PREEMPTED."""
    from hades.train.atomic import atomic_write_bytes
    from hades.train.loop import EXIT_PREEMPTED, PREEMPTED_MARKER, TrainPaths

    paths = TrainPaths.of(cfg, grid_id)
    paths.ckpt_root.mkdir(parents=True, exist_ok=True)
    cfg_file = paths.ckpt_root / "pipeline_config.yaml"  # the job's config, overrides included
    atomic_write_bytes(cfg_file, yaml.safe_dump(dict(sm.config), sort_keys=False).encode())
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n_gpus),
        "-m", "hades.train", "--config", str(cfg_file), "--model", grid_id,
    ]
    log.info("launching %s", " ".join(cmd))
    with open(sm.log[0], "a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        forwarded = set()

        def forward(signum, frame):
            if signum not in forwarded:  # torchrun handles one; a second would cut its shutdown short
                forwarded.add(signum)
                proc.send_signal(signum)

        for s in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(s, forward)
        rc = proc.wait()
    if rc != 0 and (paths.ckpt_root / PREEMPTED_MARKER).exists():
        return EXIT_PREEMPTED
    return rc


try:
    cfg = load_config(sm.config)
    n_gpus = int(sm.resources.get("gpu", 0) or sm.resources.get("gpus", 0) or 0)
    import torch

    if n_gpus > 1 and torch.cuda.is_available():
        if torch.cuda.device_count() < n_gpus:
            log.warning("the job asked for %d GPUs but sees %d", n_gpus, torch.cuda.device_count())
            n_gpus = torch.cuda.device_count()
        sys.exit(torchrun(cfg, n_gpus))

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
except Exception:
    log.exception("rule train failed")
    raise

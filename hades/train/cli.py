"""Command line of the trainer, shared by `python -m hades.train` and `hades train`.

    python -m hades.train --config config/config.yaml --model mamba2
    torchrun --standalone --nproc_per_node 4 -m hades.train --config config/paper.yaml --model hades

Exit statuses (hades/train/launch.py, shared with the pipeline's rule `train`): 0 done; 2 config
error; 3 training diverged (non-finite loss, the last good checkpoint kept); 73 another trainer of
the same model holds its lock (wait for it or kill it, then rerun); 75 preempted by
SIGTERM/SIGUSR1 after saving a checkpoint (rerun to resume).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline config YAML (config/config.yaml, config/paper.yaml)")
    p.add_argument("--model", required=True, help="grid id to train (an entry of `experiments:`)")
    p.add_argument("--rule", default="train", help="value of the MLflow tag hades.rule")


def setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    tag = f" [rank {rank}]" if "RANK" in os.environ else ""
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s{tag} %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run(args: argparse.Namespace) -> int:
    from hades.config import ConfigError, load_config

    from .launch import EXIT_CONFIG, train_status

    log = logging.getLogger("hades.train")
    try:  # a bad config or grid id is reported before torch loads (seconds)
        cfg = load_config(args.config)
        cfg.experiment(args.model)
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_CONFIG
    return train_status(cfg, args.model, rule=args.rule)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hades.train",
        description="Train one grid id of a pipeline config, resuming from its checkpoints.",
        epilog="exit status: 0 done, 2 config error, 3 diverged, 73 another trainer of the model is running, "
        "75 preempted (rerun to resume)",
    )
    add_arguments(p)
    args = p.parse_args(argv)
    setup_logging()
    return run(args)

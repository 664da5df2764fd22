"""Training: `train(cfg, grid_id)` (loop.py), AdamW + schedule (optim.py), atomic checkpoints
(checkpoint.py), DDP set-up (distributed.py), launching and exit statuses (launch.py: the rule's
srun/torchrun launcher and the one mapping of outcomes to statuses).

Entry points: `python -m hades.train --config config/config.yaml --model mamba2`, the same under
`torchrun --standalone --nproc_per_node N -m hades.train ...`, and `hades train`. Exit statuses:
0 done, 2 config error, 3 diverged (EXIT_DIVERGED), 73 another trainer of the model is running
(EXIT_LOCKED: wait for it or kill it, then rerun), 75 preempted (EXIT_PREEMPTED: a checkpoint
was saved; rerun or requeue to resume).

Attributes are imported lazily so that `hades --help` does not pay for importing torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "train": "loop",
    "TrainingDiverged": "loop",
    "Preempted": "loop",
    "TrainerLocked": "loop",
    "EXIT_DIVERGED": "loop",
    "EXIT_PREEMPTED": "loop",
    "EXIT_LOCKED": "loop",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)

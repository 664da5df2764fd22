"""AdamW with the paper's parameter groups and the cosine learning-rate schedule.

docs/paper.md "Scale and training recipe": AdamW, betas (0.9, 0.95), weight decay 0.1, with no decay
on biases, norm weights, A_log, D, dt_bias and γ; grad clip 1.0; cosine schedule with a linear
warm-up. The no-decay set comes from `model.no_weight_decay()` (the LM names biases and norms by
rule, each mixer adds its own SSM parameters), so this file knows nothing about architectures.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hades.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: `decay` (matrices: projections, embeddings, convs) and `no_decay`
    (everything `model.no_weight_decay()` lists). Every trainable parameter lands in exactly one.

    Parameters shared between modules (tied embeddings) appear once: named_parameters()
    deduplicates by identity.
    """
    no_decay_names = set(model.no_weight_decay())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name in no_decay_names else decay).append(p)
    unknown = no_decay_names - {n for n, _ in model.named_parameters()}
    assert not unknown, f"no_weight_decay() names parameters the model does not have: {sorted(unknown)}"
    return [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, tcfg: TrainConfig) -> torch.optim.AdamW:
    # On CUDA the fused AdamW (one kernel per step instead of ~a dozen foreach passes over the
    # parameters: ~0.5 ms less per step at the paper's width, docs/benchmarks.md); elsewhere the
    # default foreach one, deterministic for a fixed device and thread count (the bitwise resume
    # test relies on it). Same update rule; a run does not change device halfway.
    fused = all(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(
        param_groups(model, tcfg.weight_decay), lr=tcfg.lr, betas=tuple(tcfg.betas), eps=1e-8, fused=fused or None
    )


def lr_ratio(step: int, tcfg: TrainConfig) -> float:
    """Multiplier of the peak lr for optimizer update number `step` (0-based).

    Linear warm-up over `warmup_steps` updates ((step+1)/warmup, so the first update is not
    wasted at lr 0), then a cosine from 1 down to `min_lr_ratio` at the last update.
    """
    warmup, total, floor = tcfg.warmup_steps, tcfg.steps, tcfg.min_lr_ratio
    if step < warmup:
        return (step + 1) / warmup
    decay_steps = max(1, total - 1 - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, tcfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_ratio`; its state_dict holds only numbers (the lambda is not saved),
    so it round-trips through torch.load(weights_only=True)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_ratio(step, tcfg))

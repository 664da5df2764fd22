"""Initial values of the SSM parameters that several mixers share; not a mixer itself.

- `sample_dt_bias`: Mamba's time-step init (Mamba, Mamba2, HADES, S-Mamba).
- `sample_A_log`: Mamba2's per-head decay init (Mamba2, HADES).

Each mixer keeps its own `init_weights` and calls these; Mamba's S4D-real A (-1..-N per channel)
and S-Mamba's Butterworth companion stay in their own files, as only they use them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hades.config import ModelConfig

A_INIT_RANGE = (1.0, 16.0)  # A = -uniform(1, 16) per head (mamba_ssm's A_init_range)


def sample_dt_bias(shape: tuple[int, ...], cfg: ModelConfig, device=None) -> Tensor:
    """Mamba's time-step init: dt ~ log-uniform in [dt_min, dt_max]
    (floored at dt_init_floor), returned as softplus^{-1}(dt), so that softplus(bias) = dt when
    the projection's contribution is zero. Inverse softplus: dt + log(1 - exp(-dt)), written with
    expm1 to stay accurate for small dt (pytorch/pytorch#72759)."""
    lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
    dt = torch.exp(torch.rand(shape, device=device) * (hi - lo) + lo).clamp(min=cfg.dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


def sample_A_log(n: int, device=None) -> Tensor:
    """Mamba2's A init: log of uniform(1, 16) samples."""
    return torch.log(torch.empty(n, device=device).uniform_(*A_INIT_RANGE))

"""Token mixers of the grid, one file each, all with the same contract (see `base.Mixer`).

`build_mixer(cfg, layer_idx)` is the single dispatch point from an architecture id to a class.
"""

from __future__ import annotations

import importlib

from hades.config import ModelConfig

from .base import Mixer, MixerOutput

# arch id -> "module:Class" (imported lazily so one broken mixer does not break the others)
REGISTRY = {
    "linear_attn": "hades.models.mixers.linear_attn:LinearAttention",
    "retnet": "hades.models.mixers.retnet:MultiScaleRetention",
    "deltanet": "hades.models.mixers.deltanet:DeltaNet",
    "mamba": "hades.models.mixers.mamba:Mamba",
    "mamba2": "hades.models.mixers.mamba2:Mamba2",
    "hades": "hades.models.mixers.hades:HadesMixer",
    "smamba": "hades.models.mixers.smamba:SparseMamba",
}


def mixer_class(arch: str) -> type[Mixer]:
    if arch not in REGISTRY:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(REGISTRY)}")
    module, name = REGISTRY[arch].split(":")
    return getattr(importlib.import_module(module), name)


def build_mixer(cfg: ModelConfig, layer_idx: int) -> Mixer:
    return mixer_class(cfg.arch)(cfg, layer_idx)


__all__ = ["Mixer", "MixerOutput", "REGISTRY", "build_mixer", "mixer_class"]

"""Token mixers of the grid, one file each, all with the same contract (see `base.Mixer`).

`build_mixer(cfg, layer_idx)` is the single dispatch point from an architecture id to a class,
through `REGISTRY` (hades/archs.py: arch id -> "module:Class", read from each mixer file's
`arch = "<id>"`; the class is imported lazily).
"""

from __future__ import annotations

import importlib

from hades.archs import REGISTRY
from hades.config import ModelConfig

from .base import Mixer, MixerOutput


def mixer_class(arch: str) -> type[Mixer]:
    if arch not in REGISTRY:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(REGISTRY)}")
    module, name = REGISTRY[arch].split(":")
    return getattr(importlib.import_module(module), name)


def build_mixer(cfg: ModelConfig, layer_idx: int) -> Mixer:
    return mixer_class(cfg.arch)(cfg, layer_idx)


__all__ = ["Mixer", "MixerOutput", "REGISTRY", "build_mixer", "mixer_class"]

"""The grid's model configs straight from a config YAML (top-level `model:` merged with each
experiment's `model:`), without the JSON-Schema validation of `hades.config.load_config`:
the device machine has no jsonschema, and these scripts only need ModelConfig."""

from __future__ import annotations

import dataclasses

import yaml

from hades.config import ModelConfig

_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def grid_models(path: str, **overrides) -> dict[str, ModelConfig]:
    """{grid id: ModelConfig} with `overrides` applied to every entry."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    base = raw.get("model", {})
    out = {}
    for gid, exp in raw["experiments"].items():
        m = {**base, **(exp.get("model") or {}), **overrides}
        m = {k: (tuple(v) if isinstance(v, list) else v) for k, v in m.items() if k in _FIELDS}
        out[gid] = ModelConfig(**m)
    return out

"""The architectures of the grid: arch id -> "module:Class" of its token mixer.

The one hand-kept list of arch ids. `hades.config.ARCHS` (what a config may name) is derived
from it, and `hades.models.mixers.mixer_class` imports the named class lazily, so one broken
mixer does not break the others. Strings and the standard library only: validating a config
(the Snakefile, at parse time) must not import torch. The schema's arch enum
(hades/schemas/config.schema.yaml) mirrors these keys; tests/test_lm.py holds it to them.
"""

from __future__ import annotations

REGISTRY: dict[str, str] = {
    "linear_attn": "hades.models.mixers.linear_attn:LinearAttention",
    "retnet": "hades.models.mixers.retnet:MultiScaleRetention",
    "deltanet": "hades.models.mixers.deltanet:DeltaNet",
    "mamba": "hades.models.mixers.mamba:Mamba",
    "mamba2": "hades.models.mixers.mamba2:Mamba2",
    "hades": "hades.models.mixers.hades:HadesMixer",
    "smamba": "hades.models.mixers.smamba:SparseMamba",
}

ARCHS: tuple[str, ...] = tuple(REGISTRY)

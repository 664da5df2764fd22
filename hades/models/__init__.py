"""The model zoo: one causal-LM family covering every grid id (see lm.py, mixers/)."""

from .lm import (
    CheckpointMismatchError,
    HadesConfig,
    HadesForCausalLM,
    LMOutput,
    build_model,
    load_pretrained,
)

__all__ = ["CheckpointMismatchError", "HadesConfig", "HadesForCausalLM", "LMOutput", "build_model", "load_pretrained"]

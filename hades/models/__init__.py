"""The model zoo: one causal-LM family covering every grid id (see lm.py, mixers/)."""

from .lm import HadesConfig, HadesForCausalLM, LMOutput, build_model

__all__ = ["HadesConfig", "HadesForCausalLM", "LMOutput", "build_model"]

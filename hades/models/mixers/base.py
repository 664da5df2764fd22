"""The contract every token mixer follows.

A mixer maps u: (batch, seqlen, d_model) -> y of the same shape. It has exactly two compute
paths for the parallel forward -- `reference` (plain PyTorch, runs anywhere, chunked/parallel,
no per-token Python loop) and `fast` (GPU kernels from `kernels/`, added where they exist) --
plus the recurrent `step` used for decoding. `use_fast_path(x)` is the one dispatch point.

Decode invariant (tested for every arch): forward over T tokens == forward(return_state=True)
over a prefix, then `step` token by token from the returned state.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from hades.config import ModelConfig
from kernels.slab import GradSlab

State = dict[str, Tensor]


class MixerOutput(NamedTuple):
    y: Tensor  # (B, T, D)
    aux: dict[str, Tensor]  # unweighted auxiliary losses, e.g. {"balance": ..., "diversity": ...}
    state: State | None  # recurrent state after the last token (only with return_state=True)


class Mixer(nn.Module):
    # the architecture id of a concrete mixer, as a string literal in its class body: hades/archs.py
    # reads it from the source (no import), so the file is the mixer's registration
    arch: str | None = None

    # -- the LM's generic init of this mixer (HadesForCausalLM.reset_parameters reads these from
    # the registry's class; the default is fla's: Linear weights ~ N(0, initializer_range)) ----
    # True: Linear weights keep PyTorch's default (Kaiming-uniform) init instead of N(0, σ)
    torch_default_linear_init: bool = False
    # True: out_proj re-drawn Kaiming-uniform and scaled by 1/sqrt(n_layer) (GPT-2's residual
    # scheme, rescale_prenorm_residual in fla's Mamba2 and mamba_ssm)
    rescale_out_proj_init: bool = False

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.cfg = cfg
        self.layer_idx = layer_idx

    # -- parallel forward ----------------------------------------------------------------
    def forward(self, u: Tensor, return_state: bool = False) -> MixerOutput:
        raise NotImplementedError

    def use_fast_path(self, x: Tensor) -> bool:
        """Kernels on CUDA unless the config asks for the reference (cfg.kernel)."""
        return self.cfg.kernel == "auto" and x.is_cuda

    def grad_slab(self, t: Tensor, sizes: list[int]) -> GradSlab | None:
        """A `kernels.slab.GradSlab` for splitting t into column pieces of `sizes` on the fast
        path when a gradient will flow (the kernels that consume the pieces write their
        gradients into it: no concatenation in the split's backward), else None."""
        if self.use_fast_path(t) and torch.is_grad_enabled() and t.requires_grad:
            return GradSlab(t, sizes)
        return None

    # -- recurrent decoding ----------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        raise NotImplementedError

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        """u: (B, D) one token -> y: (B, D) and the new state (a new dict; inputs untouched)."""
        raise NotImplementedError

    # -- initialisation ----------------------------------------------------------------------
    def init_weights(self) -> None:
        """(Re)initialise the parameters that the LM's generic init (normal(0, σ) for Linear and
        Embedding weights, zero biases) does not cover: A_log, dt_bias, D, γ, conv, decay, ...
        Called once by the LM after its generic init."""

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this module) of parameters excluded from weight decay besides
        biases and norm weights, which the optimizer excludes by rule (A_log, D, dt_bias, γ...)."""
        return set()

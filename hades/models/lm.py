"""The causal LM shared by every grid id: embedding -> n_layer pre-norm blocks -> norm -> head.

A block is `x + mixer(norm(x))`, followed by `x + mlp(norm(x))` when mlp_ratio > 0 (the
attention-style baselines, as in fla); Mamba-style stacks have mixer-only blocks.

Hugging Face compatibility: `HadesConfig`/`HadesForCausalLM` are registered with the Auto
classes, save/load through safetensors with the config inside, and `generate()` (greedy or
sampled) decodes with the recurrent state cache, so lm-eval's `HFLM(pretrained=model)` works.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from hades.config import ModelConfig, check_model
from kernels.cross_entropy import cross_entropy, cross_entropy_ref
from kernels.norm import residual_add

from .layers import GatedRMSNorm, RMSNorm, ShortConv, SwiGLU
from .mixers import build_mixer, mixer_class
from .mixers.base import State

MODEL_TYPE = "hades_lm"
_FIELDS = [f.name for f in dataclasses.fields(ModelConfig)]


class HadesConfig(PretrainedConfig):
    """HF config carrying every ModelConfig field (the saved config *is* the ModelConfig)."""

    model_type = MODEL_TYPE

    def __init__(self, **kwargs):
        defaults = dataclasses.asdict(ModelConfig())
        for name in _FIELDS:
            setattr(self, name, kwargs.pop(name, defaults[name]))
        if self.vocab_size is None:
            self.vocab_size = 50277
        kwargs.setdefault("tie_word_embeddings", False)  # we tie by sharing, not by HF's machinery
        super().__init__(**kwargs)

    @classmethod
    def from_model_config(cls, cfg: ModelConfig, **kwargs) -> HadesConfig:
        return cls(**dataclasses.asdict(cfg), **kwargs)

    def to_model_config(self) -> ModelConfig:
        return ModelConfig(**{name: getattr(self, name) for name in _FIELDS})


@dataclass
class LMOutput(CausalLMOutput):
    """CausalLMOutput + the weighted auxiliary losses (summed over layers) and the state.

    logits_padded: the LM head's output over the padded vocabulary (B, T, padded_vocab_size);
    `logits` is its `[..., :vocab_size]` view. For a caller that computes its own loss (the
    trainer): `kernels.cross_entropy.cross_entropy(logits_padded, ..., n_classes=vocab_size)`
    keeps the slice out of the loss's graph (its backward zero-fills and copies a gradient of
    the padded size). Read-only, like `logits`."""

    aux_losses: dict[str, Tensor] | None = None
    state: list[State] | None = None
    logits_padded: Tensor | None = None


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = build_mixer(cfg, layer_idx)
        self.mlp = None
        if cfg.mlp_ratio > 0:
            self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
            self.mlp = SwiGLU(cfg.d_model, cfg.mlp_ratio)

    def forward(self, x: Tensor, return_state: bool = False):
        # on the kernel path the residual's gradient is added inside the norm's backward kernel
        # (kernels.norm.residual_add): no fp32 add of the residual stream per block
        res = self.norm.residual_grad(x)
        out = self.mixer(self.norm(x, residual=res), return_state=return_state)
        x = residual_add(x, out.y, res)
        if self.mlp is not None:
            res = self.mlp_norm.residual_grad(x)
            x = residual_add(x, self.mlp(self.mlp_norm(x, residual=res)), res)
        return x, out.aux, out.state

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        y, state = self.mixer.step(self.norm(x), state)
        x = x + y
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x, state


class HadesForCausalLM(PreTrainedModel):
    config_class = HadesConfig
    base_model_prefix = "hades"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["Block"]

    def __init__(self, config: HadesConfig):
        super().__init__(config)
        cfg = config.to_model_config()
        check_model(cfg, "model")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False)
        for m in self.modules():  # the short convs' and norms' fast path follows the model's kernel switch
            if isinstance(m, (ShortConv, RMSNorm, GatedRMSNorm)):
                m.use_kernel = cfg.kernel == "auto"
        self.post_init()
        self.reset_parameters()

    # -- init ------------------------------------------------------------------------------
    def _init_weights(self, module):  # HF hook: our init is explicit in reset_parameters
        pass

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The initialisation of the reference each arch follows, as its mixer class declares it
        (`Mixer.torch_default_linear_init`, `Mixer.rescale_out_proj_init`, read from the class
        the registry names for cfg.arch):

        - by default (fla: linear_attn, retnet, deltanet, mamba, mamba2; smamba, Mamba's layer
          with another A, as mamba): Linear and Embedding weights ~ N(0, initializer_range),
          zero biases.
        - torch_default_linear_init (HADES, the authors' mamba_ssm MixerModel): Linear weights
          keep PyTorch's default (Kaiming-uniform) init, embeddings ~ N(0, initializer_range),
          zero biases.
        - rescale_out_proj_init (mamba2 and HADES: fla's Mamba2 and mamba_ssm,
          rescale_prenorm_residual=True): out_proj is re-drawn Kaiming-uniform and scaled by
          1/sqrt(n_layer) (GPT-2's residual scheme).
        Then each mixer initialises its own special parameters (A_log, dt_bias, D, γ, ...).
        """
        std = self.cfg.initializer_range
        policy = mixer_class(self.cfg.arch)
        torch_default_linear = policy.torch_default_linear_init
        for m in self.modules():
            if isinstance(m, nn.Embedding) or (isinstance(m, nn.Linear) and not torch_default_linear):
                nn.init.normal_(m.weight, std=std)
            elif isinstance(m, nn.Linear):
                m.reset_parameters()
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=std)
        for block in self.layers:
            if policy.rescale_out_proj_init:
                w = block.mixer.out_proj.weight
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))
                w /= math.sqrt(self.cfg.n_layer)
            block.mixer.init_weights()

    # -- parameter groups --------------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """Full names of parameters excluded from weight decay: biases, norm weights, and what
        each mixer lists (A_log, D, dt_bias, γ, ...)."""
        names = set()
        for name, p in self.named_parameters():
            if p.ndim < 2 or name.endswith(".bias") or "norm" in name.split(".")[-2]:
                names.add(name)
        for i, block in enumerate(self.layers):
            names |= {f"layers.{i}.mixer.{n}" for n in block.mixer.no_weight_decay()}
        return names

    # -- forward -----------------------------------------------------------------------------
    def logits_padded(self, h: Tensor) -> Tensor:
        """The LM head over the padded vocabulary: (..., d_model) -> (..., padded_vocab_size)."""
        h = self.norm_f(h)
        w = self.embed.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(h, w)

    def logits(self, h: Tensor) -> Tensor:
        return self.logits_padded(h)[..., : self.cfg.vocab_size]

    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        attention_mask: Tensor | None = None,  # accepted for HF callers; causal models ignore padding on the right
        return_state: bool = False,
        logits_to_keep: int = 0,
        **_hf_kwargs,
    ) -> LMOutput:
        """input_ids: (B, T) -> logits (B, T, vocab). With labels (B, T), loss = next-token CE
        (labels shifted inside; -100 ignored) + the weighted aux losses. logits_to_keep > 0
        (HF's name): logits of the last that many positions only (B, logits_to_keep, vocab)."""
        x = self.embed(input_ids)
        aux_total: dict[str, Tensor] = {}
        states = [] if return_state else None
        for block in self.layers:
            x, aux, st = block(x, return_state=return_state)
            for k, v in aux.items():
                aux_total[k] = aux_total.get(k, 0.0) + v
            if return_state:
                states.append(st)
        padded = self.logits_padded(x[:, -logits_to_keep:] if logits_to_keep else x)
        logits = padded[..., : self.cfg.vocab_size]
        weights = {"balance": self.cfg.lambda_balance, "diversity": self.cfg.lambda_diversity}
        aux_weighted = {k: weights.get(k, 1.0) * v for k, v in aux_total.items()}
        loss = None
        if labels is not None:
            # position t predicts labels[t + 1] and the last one nothing (-100): shifting the labels
            # rather than slicing the logits keeps the (B*T, vocab) rows a view of the logits (no
            # copy of the largest activation). On CUDA with kernel "auto" the fused op (bf16 logits
            # accumulated in fp32) reads the padded logits with n_classes = vocab_size: the
            # `[..., :vocab]` slice returned as `logits` is not in the loss's graph, so its backward
            # (a zero fill and a copy of the padded size) never runs. Elsewhere the reference on the
            # sliced logits, as before.
            targets = F.pad(labels[:, 1:], (0, 1), value=-100).flatten()
            if self.cfg.kernel == "auto" and padded.is_cuda:
                loss = cross_entropy(padded.flatten(0, 1), targets, ignore_index=-100, n_classes=self.cfg.vocab_size)
            else:
                loss = cross_entropy_ref(logits.flatten(0, 1), targets, ignore_index=-100)
            for v in aux_weighted.values():
                loss = loss + v
        return LMOutput(loss=loss, logits=logits, aux_losses=aux_weighted, state=states, logits_padded=padded)

    # -- recurrent decoding ------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> list[State]:
        device = device or self.embed.weight.device
        dtype = dtype or self.embed.weight.dtype
        return [b.mixer.init_state(batch_size, device, dtype) for b in self.layers]

    def step(self, token: Tensor, state: list[State]) -> tuple[Tensor, list[State]]:
        """token: (B,) -> logits (B, vocab) and the new per-layer state."""
        x = self.embed(token)
        new_state = []
        for block, st in zip(self.layers, state):
            x, st = block.step(x, st)
            new_state.append(st)
        return self.logits(x), new_state

    @torch.no_grad()
    def prefill(self, input_ids: Tensor) -> tuple[Tensor, list[State]]:
        """One parallel pass over the prompt: last-position logits (B, vocab) and the state.
        Only the last position goes through the LM head: a (B, T, vocab) logits tensor of a
        16K-token passkey prompt would take tens of GB."""
        out = self.forward(input_ids, return_state=True, logits_to_keep=1)
        return out.logits[:, -1], out.state

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int | None = None,
        max_length: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        eos_token_id: int | list[int] | None = None,
        stopping_criteria=None,
        generator: torch.Generator | None = None,
        attention_mask: Tensor | None = None,
        **_ignored,
    ) -> Tensor:
        """Prefill the prompt in parallel, then decode token by token with the state cache.

        input_ids: (B, T0) without padding (left-padded prompts are not supported: a
        recurrent state would absorb the pads). Returns (B, T0 + n) token ids.
        """
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("generate(): padded prompts are not supported by recurrent decoding; batch prompts of equal length")
        if max_new_tokens is None:
            max_new_tokens = (max_length or input_ids.shape[1] + 20) - input_ids.shape[1]
        eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or [])
        logits, state = self.prefill(input_ids)
        out = input_ids
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for _ in range(max(0, max_new_tokens)):
            if do_sample:
                scores = logits.float() / max(temperature, 1e-6)
                if top_k:
                    kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
                    scores = scores.masked_fill(scores < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(scores, -1), 1, generator=generator).squeeze(-1)
            else:
                nxt = logits.argmax(-1)
            out = torch.cat([out, nxt[:, None]], dim=1)
            if eos:
                done |= torch.isin(nxt, torch.tensor(sorted(eos), device=nxt.device))
                if bool(done.all()):
                    break
            if stopping_criteria is not None and _stop(stopping_criteria, out):
                break
            logits, state = self.step(nxt, state)
        return out


def _stop(criteria, ids: Tensor) -> bool:
    res = criteria(ids, None)
    return bool(res.all()) if isinstance(res, Tensor) else bool(res)


class CheckpointMismatchError(ValueError):
    """A checkpoint whose weights file does not hold exactly the tensors its config.json
    describes. One line naming the directory, the first offending keys and the fix."""


# what to do about a damaged or stale export (results/checkpoints/{model}/final/)
EXPORT_FIX = ("the export is damaged or stale (its config.json and weights disagree): delete the directory "
              "and re-export it with `snakemake --forcerun train` (it resumes from the last step_* checkpoint)")


def _shown(keys, n: int = 4) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def check_weights_match(model: nn.Module, weights: str | Path, where: str | Path, fix: str = EXPORT_FIX) -> None:
    """Raise CheckpointMismatchError unless the safetensors file `weights` holds exactly
    `model`'s state_dict: no key missing, none extra, every shape equal.

    Reads only the file's header. `model` may live on the meta device (its shapes are all that
    is compared). HF's from_pretrained only reports these: a missing tensor stays uninitialised
    memory, and the evaluation then writes NaN perplexities and chance accuracies with exit
    status 0. Tied embeddings are no special case: the head then reuses `embed.weight` and
    there is no `lm_head` parameter, saved or expected.
    """
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = wanted.keys() - stored.keys()
    unexpected = stored.keys() - wanted.keys()
    mismatched = sorted(k for k in wanted.keys() & stored.keys() if wanted[k] != stored[k])
    problems = []
    if missing:
        problems.append(f"missing {_shown(missing)}")
    if unexpected:
        problems.append(f"unexpected {_shown(unexpected)}")
    if mismatched:
        shapes = ", ".join(f"{k} {list(stored[k])} (model: {list(wanted[k])})" for k in mismatched[:4])
        more = f", ... ({len(mismatched)} in all)" if len(mismatched) > 4 else ""
        problems.append(f"shape mismatch {shapes}{more}")
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {where}: {Path(weights).name} does not match the model ({'; '.join(problems)}); {fix}"
        )


def load_pretrained(checkpoint_dir: str | Path) -> HadesForCausalLM:
    """`HadesForCausalLM.from_pretrained` of an exported checkpoint dir, strictly: the weights
    must match config.json exactly (check_weights_match), so a damaged export is refused
    instead of evaluated. Every loader of a trained model uses this.
    """
    ckpt = Path(checkpoint_dir)
    weights = ckpt / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt}: no model.safetensors (only safetensors checkpoints are loaded)")
    config = HadesConfig.from_pretrained(ckpt)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        skeleton = HadesForCausalLM(config)
    check_weights_match(skeleton, weights, ckpt)
    model, info = HadesForCausalLM.from_pretrained(ckpt, config=config, use_safetensors=True, output_loading_info=True)
    # HF's own report, in case its loading (key renames, ignore lists) disagrees with the header
    left = {k: v for k, v in info.items() if v}
    if left:
        raise CheckpointMismatchError(f"checkpoint {ckpt}: from_pretrained reports {left}; {EXPORT_FIX}")
    return model


def build_model(cfg: ModelConfig, vocab_size: int | None = None) -> HadesForCausalLM:
    """Build a randomly initialised LM from a ModelConfig (vocab_size fills a None)."""
    if vocab_size is not None and cfg.vocab_size is None:
        cfg = dataclasses.replace(cfg, vocab_size=vocab_size)
    return HadesForCausalLM(HadesConfig.from_model_config(cfg))


AutoConfig.register(MODEL_TYPE, HadesConfig, exist_ok=True)
AutoModelForCausalLM.register(HadesConfig, HadesForCausalLM, exist_ok=True)

"""LM-level invariants for every grid id of config/config.yaml (the whole zoo at toy size).

- decoding == parallel forward: prefill(t) + token-by-token `step` reproduces the fp32 logits of
  one forward over the same tokens (max error ≤ 1e-4 of the largest logit);
- save_pretrained / from_pretrained through safetensors, config inside: identical logits;
- the HF Auto classes resolve our config and model;
- greedy `generate()` == an argmax loop over full forwards;
- weight-decay groups: biases, norm weights, A_log, D, dt_bias, γ excluded, matrices decayed;
- bad configs fail fast with a message that names the key.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from hades.config import ConfigError, load_config
from hades.models import HadesConfig, HadesForCausalLM, build_model

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
RAW = yaml.safe_load(CONFIG.read_text())
CFG = load_config(CONFIG)
GRID = list(CFG.experiments)
VOCAB = CFG.tokenizer["vocab_size"]
# parameters that never take weight decay besides biases and norm weights (docs/paper.md "Scale and
# training recipe")
NO_DECAY_LEAVES = {"A_log", "D", "dt_bias", "gamma"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)


def _model(gid: str, seed: int = 0) -> HadesForCausalLM:
    torch.manual_seed(seed)
    return build_model(CFG.experiment(gid).model, vocab_size=VOCAB).eval()


def _ids(batch=2, length=40, seed=0):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _rel_err(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("gid", GRID)
def test_decode_matches_forward(gid):
    model = _model(gid)
    ids = _ids(length=45)
    prompt = 19  # neither a chunk boundary nor a power of two
    with torch.no_grad():
        full = model(ids).logits  # (B, T, V)
        logits, state = model.prefill(ids[:, :prompt])
        decoded = [logits]
        for t in range(prompt, ids.shape[1] - 1):
            logits, state = model.step(ids[:, t], state)
            decoded.append(logits)
    decoded = torch.stack(decoded, dim=1)  # predictions for positions prompt-1 ... T-2
    err = _rel_err(decoded, full[:, prompt - 1 : -1])
    assert err <= 1e-4, f"{gid}: prefill({prompt}) + step decode vs forward: max rel error {err:.2e}"


@pytest.mark.parametrize("gid", GRID)
def test_save_load_roundtrip(gid, tmp_path):
    model = _model(gid)
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file(), f"{gid}: saved {sorted(p.name for p in tmp_path.iterdir())}"
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "hades_lm" and saved["arch"] == model.cfg.arch, saved

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is HadesForCausalLM
    assert loaded.cfg == model.cfg, f"{gid}: config changed on the round trip"
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits), f"{gid}: logits changed after reload"


def test_auto_classes_resolve(tmp_path):
    cfg = HadesConfig.from_model_config(CFG.experiment(GRID[0]).model)
    assert isinstance(AutoConfig.for_model("hades_lm"), HadesConfig)
    cfg.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), HadesConfig)
    assert isinstance(AutoModelForCausalLM.from_config(cfg), HadesForCausalLM)


@pytest.mark.parametrize("gid", GRID)
def test_generate_greedy_equals_argmax_loop(gid):
    model = _model(gid)
    prompt = _ids(length=11, seed=1)
    out = model.generate(prompt, max_new_tokens=6, do_sample=False)
    seq = prompt
    with torch.no_grad():
        for _ in range(6):
            nxt = model(seq).logits[:, -1].argmax(-1)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
    assert torch.equal(out, seq), f"{gid}: generate {out[:, 11:].tolist()} vs argmax loop {seq[:, 11:].tolist()}"


@pytest.mark.parametrize("gid", GRID)
def test_weight_decay_groups(gid):
    model = _model(gid)
    no_decay = model.no_weight_decay()
    names = dict(model.named_parameters())
    assert no_decay <= set(names), f"{gid}: unknown names {no_decay - set(names)}"
    must_skip = {
        n for n in names
        if n.endswith(".bias") or "norm" in n.split(".")[-2] or n.split(".")[-1] in NO_DECAY_LEAVES
    }
    assert must_skip <= no_decay, f"{gid}: decayed but should not be: {sorted(must_skip - no_decay)}"
    matrices = {
        f"{mod_name}.weight" if mod_name else "weight"
        for mod_name, mod in model.named_modules()
        if isinstance(mod, (nn.Linear, nn.Embedding, nn.Conv1d))
    }
    assert not (matrices & no_decay), f"{gid}: matrices excluded from decay: {sorted(matrices & no_decay)}"


# -- bad configs fail fast, naming the key ---------------------------------------------------
def _with(path: str, value):
    """A copy of config.yaml's raw dict with one dotted key set."""
    raw = copy.deepcopy(RAW)
    *parents, leaf = path.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return raw


@pytest.mark.parametrize(
    "path, value, key",
    [
        ("experiments.hades.model.n_shared", 5, "n_shared"),  # S > H
        ("experiments.hades.model.n_active", 9, "n_active"),  # H > M = 8 filters
        ("experiments.mamba2.model.head_dim", 48, "head_dim"),  # 48 ∤ expand·d_model = 256
        ("experiments.linear_attn.model.num_heads", 3, "num_heads"),  # 3 ∤ d_model = 128
        ("experiments.retnet.model.arch", "transformer", "arch"),
        ("model.d_modle", 128, "d_modle"),  # unknown key
        ("experiments.deltanet.model.d_model", "128", "d_model"),  # wrong type
        ("train.micro_batch", 3, "micro_batch"),  # does not divide global_batch
        ("passkey.models", ["mamba2", "nope"], "nope"),  # unknown grid id
    ],
)
def test_bad_config_names_the_key(path, value, key):
    with pytest.raises(ConfigError, match=key):
        load_config(_with(path, value))


def test_unknown_grid_id():
    with pytest.raises(ConfigError, match="'transformer'.*known: linear_attn"):
        CFG.experiment("transformer")


def test_initialisation_follows_each_reference():
    """fla: N(0, σ) Linear weights; HADES (mamba_ssm): PyTorch default Linear init; mamba2 and
    HADES: out_proj Kaiming-uniform / sqrt(n_layer) (GPT-2 residual scaling)."""
    import math

    from hades.config import load_config
    from hades.models import build_model

    cfg = load_config("config/config.yaml")
    torch.manual_seed(0)
    for gid in ("mamba2", "hades", "mamba", "linear_attn"):
        mc = dataclasses.replace(cfg.experiment(gid).model, d_model=256, n_layer=4)
        model = build_model(mc, vocab_size=512)
        mixer = model.layers[0].mixer
        sigma = mc.initializer_range
        proj = mixer.in_proj if hasattr(mixer, "in_proj") else mixer.q_proj
        fan_in = proj.weight.shape[1]
        expected = 1 / math.sqrt(3 * fan_in) if gid == "hades" else sigma
        assert abs(proj.weight.std().item() / expected - 1) < 0.1, (gid, proj.weight.std().item(), expected)
        if gid in ("mamba2", "hades"):
            w = mixer.out_proj.weight
            expected = 1 / math.sqrt(3 * w.shape[1]) / math.sqrt(mc.n_layer)
            assert abs(w.std().item() / expected - 1) < 0.1, (gid, w.std().item(), expected)


def test_architecture_ids_agree_and_every_mixer_imports():
    """ARCHS (config validation), the schema's arch enum and the mixer REGISTRY name the same ids,
    and each registered module imports: a config can never pass validation for an arch whose
    mixer is missing (as `smamba` once did)."""
    import importlib

    import yaml

    from hades.config import ARCHS, SCHEMA_PATH
    from hades.models.mixers import REGISTRY, mixer_class

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    assert list(ARCHS) == list(REGISTRY) == schema["$defs"]["arch"]["enum"]
    for arch, target in REGISTRY.items():
        module, name = target.split(":")
        assert mixer_class(arch) is getattr(importlib.import_module(module), name)


def test_architecture_ids_are_kept_in_one_place():
    """hades/archs.py's REGISTRY is the one list: config validation's ARCHS is derived from it and
    the mixers dispatch through the same dict (so a test that swaps an entry swaps it for both)."""
    from hades import archs, config
    from hades.models import mixers

    assert config.ARCHS == archs.ARCHS == tuple(archs.REGISTRY)
    assert mixers.REGISTRY is archs.REGISTRY


def test_a_mixer_registers_by_its_file(tmp_path):
    """hades/archs.py reads each mixer file's `arch = "<id>"` without importing it: a new file is a
    new arch, a class without the literal is none, and one id declared twice names both places;
    every registered class declares the id it is registered under."""
    from hades.archs import REGISTRY, discover
    from hades.models.mixers import mixer_class

    (tmp_path / "toy.py").write_text('import torch_is_not_imported\n\nclass Toy:\n    arch = "toy"\n\n\nclass Helper:\n    pass\n')
    (tmp_path / "other.py").write_text('class Other:\n    arch: str = "other"\n')
    assert discover(tmp_path, "pkg") == {"other": "pkg.other:Other", "toy": "pkg.toy:Toy"}
    (tmp_path / "twice.py").write_text('class Again:\n    arch = "toy"\n')
    with pytest.raises(RuntimeError, match=r"'toy' is declared twice: pkg.toy:Toy and pkg.twice:Again"):
        discover(tmp_path, "pkg")
    for arch in REGISTRY:
        assert mixer_class(arch).arch == arch

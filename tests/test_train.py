"""Training: optimizer groups, schedule, the loop's outputs, accumulation and DDP equivalence.

The trainer is exercised with a tiny stand-in mixer and token stream (tests/_train_support.py)
so that these tests measure the trainer, not the mixers; `test_real_arch_trains` runs every
architecture that is importable through the same loop.
"""

from __future__ import annotations

import importlib
import json
import math

import pytest
import torch
from _train_support import (
    TEST_ARCH,
    final_weights,
    metrics_rows,
    tiny_env,
)

from hades.config import ARCHS, TrainConfig, load_config
from hades.models import build_model
from hades.train import train
from hades.train.optim import build_optimizer, lr_ratio, param_groups


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    with tiny_env(tmp_path, monkeypatch) as env:
        yield env


def _tiny_model(arch=TEST_ARCH, **model):
    from _train_support import config_dict

    raw = config_dict("/nonexistent")
    raw["model"].update(arch=arch, **model)
    return build_model(load_config(raw).experiment("tiny").model, vocab_size=61)


def test_param_groups_follow_no_weight_decay(tiny):
    model = _tiny_model()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert not nd & d
    assert nd | d == set(names.values()), "every parameter is in exactly one group"
    assert nd == model.no_weight_decay()
    assert {"layers.0.mixer.D", "layers.0.mixer.in_proj.bias", "layers.0.norm.weight", "norm_f.weight"} <= nd
    assert {"embed.weight", "layers.0.mixer.in_proj.weight", "layers.1.mixer.out_proj.weight"} <= d
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    opt = build_optimizer(model, TrainConfig(betas=(0.9, 0.95)))
    assert opt.defaults["betas"] == (0.9, 0.95)


@pytest.mark.parametrize("arch", ["mamba2", "hades", "mamba"])
def test_ssm_parameters_not_decayed(arch):
    """docs/paper.md "Scale and training recipe": no decay on A_log, D, dt_bias, γ (the real mixers,
    where they exist)."""
    try:
        model = _tiny_model(arch, d_model=32, n_layer=1, head_dim=8, n_active=4, n_shared=2, d_state=4)
    except (ImportError, AttributeError) as e:
        pytest.skip(f"{arch} mixer not available: {e}")
    _, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)].rsplit(".", 1)[-1] for p in no_decay["params"]}
    expected = {"A_log", "D"} | ({"dt_bias"} if arch != "mamba" else set()) | ({"gamma"} if arch == "hades" else set())
    present = {n.rsplit(".", 1)[-1] for n in names.values()}
    assert expected & present <= nd, f"{arch}: {sorted(expected & present - nd)} would be weight-decayed"


def test_lr_schedule_warmup_then_cosine():
    t = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    r = [lr_ratio(i, t) for i in range(t.steps)]
    assert r[0] == pytest.approx(0.1) and r[9] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(r[:10], r[1:10])), "linear warm-up increases"
    assert all(b <= a for a, b in zip(r[10:], r[11:])), "cosine decays monotonically"
    assert r[-1] == pytest.approx(0.1), "ends at min_lr_ratio * lr"
    mid = 10 + (99 - 10) // 2
    assert r[mid] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (mid - 10) / 89)))
    assert lr_ratio(0, TrainConfig(steps=5, warmup_steps=0)) == pytest.approx(1.0)


def test_train_outputs_and_provenance(tiny):
    from transformers import AutoModelForCausalLM

    cfg, _ = tiny.config("run", steps=12)
    summary = train(cfg, "tiny")
    root = cfg.results_dir
    rows = metrics_rows(cfg, "tiny")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert {"loss", "ce", "aux/balance", "lr", "grad_norm", "tokens", "tokens_per_s"} <= rows[0].keys()
    assert rows[-1]["loss"] < rows[0]["loss"], "the tiny model learns the repeating stream"
    assert rows[-1]["tokens"] == 12 * 4 * 16

    on_disk = json.loads(open(f"{root}/train/tiny/summary.json").read())
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["status"] == "completed" and summary["steps"] == 12
    assert summary["config_hash"] == cfg.hash()
    assert summary["git_commit"] and summary["data_manifest_sha256"]

    final = f"{root}/checkpoints/tiny/final"
    prov = json.loads(open(f"{final}/pipeline.json").read())
    assert prov["config_hash"] == cfg.hash() and prov["pipeline_config"]["name"] == "test"
    assert prov["experiment"]["model"]["vocab_size"] == 61, "vocab filled from the data"
    assert prov["git_commit"] == summary["git_commit"] and prov["mlflow_run_id"] == summary["mlflow_run_id"]
    model = AutoModelForCausalLM.from_pretrained(final)
    ref = final_weights(cfg, "tiny")
    assert torch.equal(model.state_dict()["embed.weight"], ref["embed.weight"])
    import os

    assert sorted(p for p in os.listdir(f"{root}/checkpoints/tiny") if p.startswith("step_")) == ["step_00000012"], (
        "once the final model is exported only the last step's checkpoint is kept"
    )


def test_validation_loss_is_logged_and_leaves_training_unchanged(tiny):
    """train.eval_every: val_loss on the fixed windows every k steps and at the end, the last and
    best in the summary; the training curve is bit-identical to a run without validation."""
    plain, _ = tiny.config("plain", steps=10)
    val, _ = tiny.config("val", steps=10, eval_every=4, eval_windows=3)
    train(plain, "tiny")
    summary = train(val, "tiny")
    rows = metrics_rows(val, "tiny")
    assert [r["step"] for r in rows if "val_loss" in r] == [4, 8, 10]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert vals[-1] < vals[0], "the tiny model learns the repeating stream: validation falls"
    assert summary["final_val_loss"] == vals[-1] and summary["best_val_loss"] == min(vals)
    assert summary["best_val_step"] == [4, 8, 10][vals.index(min(vals))]
    assert [r["loss"] for r in rows] == [r["loss"] for r in metrics_rows(plain, "tiny")]
    assert "final_val_loss" not in json.loads(open(f"{plain.results_dir}/train/tiny/summary.json").read())


def test_gradient_accumulation_matches_full_batch(tiny):
    """micro_batch only changes how the global batch is split: same loss curve (fp32 CPU)."""
    a, _ = tiny.config("accum", steps=6, micro_batch=1)
    b, _ = tiny.config("full", steps=6, micro_batch=4)
    train(a, "tiny")
    train(b, "tiny")
    la = [r["loss"] for r in metrics_rows(a, "tiny")]
    lb = [r["loss"] for r in metrics_rows(b, "tiny")]
    assert max(abs(x - y) for x, y in zip(la, lb)) < 1e-5, (la, lb)


def test_torchrun_two_gloo_processes_match_one(tiny):
    """torchrun --nproc_per_node 2 (gloo, CPU) == 1 process, same global batch, 20 steps."""
    one, _ = tiny.config("one", steps=20, checkpoint_every=10)
    two, two_path = tiny.config("two", steps=20, checkpoint_every=10)
    proc = tiny.spawn(two_path, nproc=2)
    train(one, "tiny")  # overlaps with the subprocess start-up
    assert proc.wait(timeout=600) == 0, tiny.output(two_path)
    l1 = [r["loss"] for r in metrics_rows(one, "tiny")]
    l2 = [r["loss"] for r in metrics_rows(two, "tiny")]
    assert len(l1) == len(l2) == 20
    worst = max(abs(x - y) for x, y in zip(l1, l2))
    assert worst < 1e-5, f"2-process loss curve differs by {worst:.2e}"
    s2 = json.loads(open(f"{two.results_dir}/train/tiny/summary.json").read())
    assert s2["world_size"] == 2


@pytest.mark.parametrize("arch", ARCHS)
def test_real_arch_trains(arch, tiny, monkeypatch):
    """Every architecture that exists trains through the same loop (3 steps, tiny)."""
    from hades.models.mixers import REGISTRY

    monkeypatch.setitem(REGISTRY, arch, tiny.real_registry[arch])
    module = REGISTRY[arch].split(":")[0]
    try:
        importlib.import_module(module)
    except ImportError as e:
        pytest.skip(f"{arch}: {e}")
    cfg, _ = tiny.config(arch, steps=3, checkpoint_every=2, log_every=1)
    raw = dict(cfg.raw)
    raw["model"] = {**raw["model"], "arch": arch, "d_model": 32, "head_dim": 8, "num_heads": 2, "n_active": 4, "n_shared": 2}
    summary = train(load_config(raw), "tiny")
    assert summary["steps"] == 3 and math.isfinite(summary["final_loss"])


def test_hades_train_subcommand_is_registered(capsys):
    from hades.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    assert "--model" in capsys.readouterr().out


def test_cuda_graph_true_needs_one_cuda_process(tiny):
    """train.cuda_graph: true on the CPU names the key, the file and why; auto trains eagerly."""
    from hades.config import ConfigError

    cfg, path = tiny.config("graph", steps=2, cuda_graph=True)
    with pytest.raises(ConfigError, match=r"experiments\.tiny\.train\.cuda_graph: true, but the device is cpu") as e:
        train(cfg, "tiny")
    assert str(path) in str(e.value)
    auto, _ = tiny.config("auto", steps=2, cuda_graph="auto")
    assert train(auto, "tiny")["cuda_graph"] is False
    with pytest.raises(ConfigError, match="cuda_graph"):
        tiny.config("bad", steps=2, cuda_graph="yes")

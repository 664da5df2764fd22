"""The trainer's CUDA-graph mode (train.cuda_graph, hades/train/graph.py) trains like the eager
trainer: same per-step losses, gradient norms and final weights, for every architecture, with
gradient accumulation (2 micro-batches per step) so that the replayed backward must add into
the gradients of the one before."""

from __future__ import annotations

import pytest
import torch
from _train_support import final_weights, metrics_rows, tiny_env

from hades.config import ARCHS, load_config
from hades.train import train

# fp32: the only differences are the summation order of atomics in the SSD backward
TOL = {"fp32": (2e-4, 2e-3), "bf16": (5e-3, 3e-2)}  # (loss, gradient norm and weights), relative


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    try:
        import mlflow  # noqa: F401
        has_mlflow = True
    except ImportError:  # a GPU machine with torch but not the whole pipeline: what the trainer logs is not checked here
        has_mlflow = False
    with tiny_env(tmp_path, monkeypatch, mlflow=has_mlflow) as env:
        yield env


def _run(tiny, name: str, arch: str, precision: str, cuda_graph):
    cfg, _ = tiny.config(name, steps=6, seq_len=64, global_batch=4, micro_batch=2, checkpoint_every=6,
                         log_every=1, precision=precision, cuda_graph=cuda_graph)
    raw = dict(cfg.raw)
    raw["model"] = {**raw["model"], "arch": arch, "d_model": 64, "head_dim": 16, "d_state": 16, "num_heads": 2,
                    "n_active": 4, "n_shared": 2, "chunk_size": 16}
    cfg = load_config(raw)
    summary = train(cfg, "tiny")
    return summary, metrics_rows(cfg, "tiny"), final_weights(cfg, "tiny")


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("arch", ARCHS)
def test_graph_step_trains_like_eager(arch, precision, tiny, monkeypatch):
    from hades.models.mixers import REGISTRY

    if precision == "bf16" and arch not in ("hades", "mamba2", "mamba", "smamba"):
        pytest.skip("bf16 checked on the SSM archs; fp32 covers every arch")
    monkeypatch.setitem(REGISTRY, arch, tiny.real_registry[arch])
    eager, e_rows, e_w = _run(tiny, "eager", arch, precision, False)
    graph, g_rows, g_w = _run(tiny, "graph", arch, precision, True)
    assert eager["cuda_graph"] is False and graph["cuda_graph"] is True, "the graph run must replay a capture"
    tol_loss, tol_other = TOL[precision]
    assert [r["step"] for r in g_rows] == [r["step"] for r in e_rows] == list(range(1, 7))
    for e, g in zip(e_rows, g_rows):
        assert _rel(g["loss"], e["loss"]) < tol_loss, (e["step"], e["loss"], g["loss"])
        assert _rel(g["ce"], e["ce"]) < tol_loss, (e["step"], e["ce"], g["ce"])
        assert _rel(g["grad_norm"], e["grad_norm"]) < tol_other, (e["step"], e["grad_norm"], g["grad_norm"])
        for k in e:
            if k.startswith("aux/"):
                assert abs(g[k] - e[k]) <= tol_other * max(abs(e[k]), 1e-3), (e["step"], k, e[k], g[k])
    assert e_rows[-1]["loss"] < e_rows[0]["loss"], "the eager run learns (else the comparison is vacuous)"
    assert e_w.keys() == g_w.keys()
    for k in e_w:
        d = (g_w[k].float() - e_w[k].float()).norm() / e_w[k].float().norm().clamp_min(1e-12)
        assert d < tol_other, (k, float(d))


def test_graph_mode_keeps_the_gradient_buffers(tiny, monkeypatch):
    """zero_grad(set_to_none=True) behind the graph's back is an error, not silent garbage."""
    from hades.train.graph import GraphedMicroStep

    model = torch.nn.Linear(4, 4).cuda()

    def step(w):
        loss = model(w.float()).square().mean()
        loss.backward()
        return loss.detach().double().reshape(1), []

    g = GraphedMicroStep(model, step, torch.device("cuda"), warmup=1, strict=True)
    for _ in range(3):
        g.zero_grad()
        g(torch.ones(2, 4, dtype=torch.long))
    assert g.captured and g.n_replays == 2
    ref = model.weight.grad.clone()
    g.zero_grad()
    g(torch.ones(2, 4, dtype=torch.long))
    g(torch.ones(2, 4, dtype=torch.long))
    torch.testing.assert_close(model.weight.grad, 2 * ref, rtol=1e-6, atol=1e-7)  # replays accumulate
    model.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="fixed buffers"):
        g.zero_grad()

"""Whole models on the GPU: the kernel path (cfg.kernel = "auto": Triton SSD / selective scan /
conv, fla's attention kernels) computes the reference path's function: logits and every
parameter gradient, same weights, fp32 (issue 4, acceptance 4)."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
import yaml

from hades.config import ModelConfig

from ._tol import FP32_TOL, rel_err

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def _grid(path: str) -> dict[str, ModelConfig]:
    """The default config's grid (model defaults merged with each experiment's overrides)."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    models = {g: {**raw.get("model", {}), **(e.get("model") or {}), "vocab_size": 512} for g, e in raw["experiments"].items()}
    return {g: ModelConfig(**{k: v for k, v in m.items() if k in _FIELDS}) for g, m in models.items()}


GRID = _grid(os.path.join(ROOT, "config", "config.yaml"))
LOGIT_TOL, GRAD_TOL = 1e-3, 5e-3


@pytest.mark.parametrize("grid_id", list(GRID))
def test_kernel_path_matches_reference_path(grid_id):
    from hades.models import build_model

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cfg = GRID[grid_id]
    torch.manual_seed(0)
    fast = build_model(dataclasses.replace(cfg, kernel="auto")).cuda()
    ref = build_model(dataclasses.replace(cfg, kernel="reference")).cuda()
    ref.load_state_dict(fast.state_dict())
    ids = torch.randint(0, 512, (2, 301), device="cuda")  # not a multiple of any chunk size
    outs = {}
    for name, model in (("fast", fast), ("ref", ref)):
        out = model(ids, labels=ids)
        out.loss.backward()
        outs[name] = (out.logits.detach(), {k: p.grad for k, p in model.named_parameters() if p.grad is not None})
    (lf, gf), (lr, gr) = outs["fast"], outs["ref"]
    err = rel_err(lf, lr)
    assert err <= LOGIT_TOL, f"{grid_id}: logits rel err {err:.2e}"
    assert gf.keys() == gr.keys(), f"{grid_id}: parameters with gradients differ: {set(gf) ^ set(gr)}"
    worst = max(((rel_err(gf[k], gr[k]), k) for k in gr if gr[k].norm() > 0), default=(0.0, ""))
    assert worst[0] <= GRAD_TOL, f"{grid_id}: gradient of {worst[1]} rel err {worst[0]:.2e}"


@pytest.mark.parametrize("grid_id", list(GRID))
def test_kernel_path_evaluation_and_decoding(grid_id):
    """Without a gradient (evaluation: lm-eval, passkey) the kernel path's logits equal the
    reference path's (the forwards that store no states, Mamba's time step inside the scan), and
    prefill + token-by-token decoding on the GPU reproduces the kernel path's parallel logits."""
    from hades.models import build_model

    cfg = GRID[grid_id]
    torch.manual_seed(0)
    fast = build_model(dataclasses.replace(cfg, kernel="auto")).cuda().eval()
    ref = build_model(dataclasses.replace(cfg, kernel="reference")).cuda().eval()
    ref.load_state_dict(fast.state_dict())
    ids = torch.randint(0, 512, (2, 301), device="cuda")
    prompt = 283  # neither a chunk boundary nor a power of two
    with torch.no_grad():
        full = fast(ids).logits
        err = rel_err(full, ref(ids).logits)
        assert err <= LOGIT_TOL, f"{grid_id}: evaluation logits rel err {err:.2e}"
        logits, state = fast.prefill(ids[:, :prompt])
        decoded = [logits]
        for t in range(prompt, ids.shape[1] - 1):
            logits, state = fast.step(ids[:, t], state)
            decoded.append(logits)
    err = rel_err(torch.stack(decoded, dim=1), full[:, prompt - 1 : -1])
    assert err <= LOGIT_TOL, f"{grid_id}: prefill({prompt}) + step decode vs the parallel forward: rel err {err:.2e}"


@pytest.mark.parametrize("grid_id", ["hades", "hades_shared_only"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hades_compiled_router_equals_eager(dtype, grid_id):
    """The torch.compile'd router glue (training on CUDA) computes the eager function: Δ, the
    routing ids, L_balance, and the gradients they send to the inputs and parameters; also with
    Q = 0, where the scores feed L_balance only."""
    from hades.models.mixers.hades import HadesMixer

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cfg = dataclasses.replace(GRID[grid_id], kernel="auto")
    torch.manual_seed(0)
    mixer = HadesMixer(cfg, 0).cuda()
    u = torch.randn(2, 301, cfg.d_model, device="cuda")
    dt_raw = torch.randn(2, 301, cfg.n_filters, device="cuda").to(dtype)
    results = []
    for compiled in (False, True):
        mixer.zero_grad(set_to_none=True)
        ui, di = u.clone().requires_grad_(), dt_raw.clone().requires_grad_()
        # what the forward runs: the product W_r u eagerly, the rest compiled
        route = torch.compile(mixer._route_from_proj, dynamic=False) if compiled else mixer._route_from_proj
        delta, delta_nb, ids, balance = route(mixer._router_proj(ui), di)
        (delta.pow(2).sum() + delta_nb.sum() + balance).backward()
        params = (mixer.h_proj.weight, mixer.dt_bias) + ((mixer.gamma,) if mixer.n_experts > 0 else ())
        grads = [ui.grad, di.grad] + [p.grad for p in params]
        results.append((delta, delta_nb, ids, balance, grads))
    (d0, n0, i0, b0, g0), (d1, n1, i1, b1, g1) = results
    assert torch.equal(i0, i1), "compiled routing picked other filters"
    assert b0 > 0 and g0[2].abs().sum() > 0, "L_balance or its gradient to h_proj is missing"
    for name, a, b in [("delta", d1, d0), ("delta_no_bias", n1, n0), ("balance", b1, b0)] + [
        (f"grad{k}", x, y) for k, (x, y) in enumerate(zip(g1, g0))
    ]:
        # fp32 throughout, except that dt_raw's gradient is rounded to bf16 for bf16 input
        tol = 1e-5 if dtype == torch.float32 or name != "grad1" else 1e-2
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.2e}"


def test_hades_shared_only_balance_loss_on_the_fast_path(monkeypatch):
    """Q = 0: the fast path (in_proj fused with the router's product, kernels/router, on fp32 u)
    computes the unused scores' L_balance and sends its gradient to in_proj's dt_raw rows, h_proj
    and u as the reference path does. fp32: Var(s)/mean(s)^2 amplifies rounding where the
    scores' mean is small, so bf16 in_proj products rounded differently would blur the check."""
    import kernels.router
    from hades.models.mixers import hades as hades_mod

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    calls = []
    fused = kernels.router.in_router_proj
    monkeypatch.setattr(hades_mod, "in_router_proj", lambda *a: calls.append(1) or fused(*a))
    cfg = GRID["hades_shared_only"]
    assert cfg.n_experts == 0 and cfg.n_candidates > 0
    torch.manual_seed(0)
    fast = hades_mod.HadesMixer(dataclasses.replace(cfg, kernel="auto"), 0).cuda()
    ref = hades_mod.HadesMixer(dataclasses.replace(cfg, kernel="reference"), 0).cuda()
    ref.load_state_dict(fast.state_dict())
    fast.compile_router = False  # the compiled glue: test_hades_compiled_router_equals_eager
    u = torch.randn(2, 301, cfg.d_model, device="cuda") + 0.5
    res = {}
    for name, mixer in (("fast", fast), ("ref", ref)):
        ui = u.clone().requires_grad_()
        balance = mixer(ui).aux["balance"]
        balance.backward()
        res[name] = (balance.detach(), ui.grad, mixer.in_proj.weight.grad, mixer.h_proj.weight.grad)
    assert calls, "the fast path did not use the fused in_proj + router product"
    M = cfg.n_filters
    (bf, uf, wf, hf), (br, ur, wr, hr) = res["fast"], res["ref"]
    assert br > 0 and wr[-M:].abs().sum() > 0 and ur.abs().sum() > 0
    assert torch.count_nonzero(wf[:-M]) == 0, "L_balance reached in_proj rows other than dt_raw"
    for name, a, b in [("balance", bf, br), ("du", uf, ur), ("dW_in dt_raw", wf[-M:], wr[-M:]), ("dW_h", hf, hr)]:
        assert rel_err(a, b) <= FP32_TOL, f"{name}: {rel_err(a, b):.2e}"

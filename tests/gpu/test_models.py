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

from ._tol import rel_err

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hades_compiled_router_equals_eager(dtype):
    """The torch.compile'd router glue (training on CUDA) computes the eager function: Δ, the
    routing ids, L_balance, and the gradients they send to the inputs and parameters."""
    from hades.models.mixers.hades import HadesMixer

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cfg = dataclasses.replace(GRID["hades"], kernel="auto")
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
        grads = [ui.grad, di.grad] + [p.grad for p in (mixer.h_proj.weight, mixer.gamma, mixer.dt_bias)]
        results.append((delta, delta_nb, ids, balance, grads))
    (d0, n0, i0, b0, g0), (d1, n1, i1, b1, g1) = results
    assert torch.equal(i0, i1), "compiled routing picked other filters"
    for name, a, b in [("delta", d1, d0), ("delta_no_bias", n1, n0), ("balance", b1, b0)] + [
        (f"grad{k}", x, y) for k, (x, y) in enumerate(zip(g1, g0))
    ]:
        # fp32 throughout, except that dt_raw's gradient is rounded to bf16 for bf16 input
        tol = 1e-5 if dtype == torch.float32 or name != "grad1" else 1e-2
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.2e}"

"""Model invariants of the state-space mixers (Mamba, Mamba2, HADES, Sparse Mamba).

* decode parity: forward(return_state=True) over a prefix + `step` token by token == forward
  over the whole sequence (fp32, max relative error <= 1e-4), HADES's running mean included;
* HADES reduction: γ = 0 and all slots shared (hades_shared_only) is a Mamba2 mixer of H heads;
* the router's scores learn only through L_balance; no-weight-decay lists;
* analysis hooks and the spectral-bias switch;
* paper-scale parameter counts (meta device) and a tiny LM of each arch that trains.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from hades.config import ModelConfig, load_config
from hades.models import build_model
from hades.models.mixers import build_mixer
from hades.models.mixers.hades import HadesMixer
from hades.models.mixers.mamba2 import Mamba2

SMALL = dict(d_model=32, n_layer=2, head_dim=8, d_state=8, expand=2, d_conv=4, chunk_size=8, vocab_size=48)
# M = expand * d_model / head_dim = 8 filters; H = 4 active
VARIANTS = {
    "mamba": dict(arch="mamba"),
    "mamba2": dict(arch="mamba2"),
    "hades": dict(arch="hades", n_active=4, n_shared=2),
    "hades_shared_only": dict(arch="hades", n_active=4, n_shared=4),
    "hades_expert_only": dict(arch="hades", n_active=4, n_shared=0),
    "hades_groups": dict(arch="hades", n_active=4, n_shared=1, n_groups=2),
    "smamba": dict(arch="smamba"),
    "smamba_observable": dict(arch="smamba", smamba_form="observable"),
    "smamba_unstable": dict(arch="smamba", smamba_stable=False),
}

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)



def small_cfg(name: str, **overrides) -> ModelConfig:
    return ModelConfig(**{**SMALL, **VARIANTS[name], **overrides})


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Move every parameter away from its structured init (D = 1, γ = 0.25, zero conv bias...)
    so that parity tests exercise all of them; A_log stays moderate so states keep memory."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if name.endswith("A_log"):
            p.copy_(torch.log(torch.rand(p.shape, generator=gen) * 2 + 0.2))
        elif name.endswith("dt_bias") or name.endswith("dt_proj.bias"):
            p.copy_(noise * 0.5 - 1.0)
        else:
            p.add_(noise * 0.1 * (p.detach().std() if p.numel() > 1 else 1.0) + 0.05 * noise)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


# -- decode parity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(VARIANTS))
def test_mixer_decode_matches_forward(name):
    torch.manual_seed(0)
    mixer = build_mixer(small_cfg(name), layer_idx=0).eval()
    randomize_(mixer)
    u = torch.randn(3, 29, SMALL["d_model"])
    prefix = 13  # odd, not a multiple of the chunk (8) or of d_conv (4)
    with torch.no_grad():
        full = mixer(u).y
        out = mixer(u[:, :prefix], return_state=True)
        ys, state = [out.y], out.state
        for t in range(prefix, u.shape[1]):
            y, state = mixer.step(u[:, t], state)
            ys.append(y[:, None])
    err = rel_err(torch.cat(ys, dim=1), full)
    assert err <= 1e-4, f"{name}: prefill + step differs from forward, max rel err {err:.2e}"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_mixer_step_from_init_state_matches_forward(name):
    """Decoding from `init_state` (no prefill at all) reproduces forward from the first token."""
    torch.manual_seed(1)
    mixer = build_mixer(small_cfg(name), layer_idx=0).eval()
    randomize_(mixer, seed=1)
    u = torch.randn(2, 11, SMALL["d_model"])
    with torch.no_grad():
        full = mixer(u).y
        state = mixer.init_state(2, u.device, u.dtype)
        ys = []
        for t in range(u.shape[1]):
            y, state = mixer.step(u[:, t], state)
            ys.append(y)
    err = rel_err(torch.stack(ys, dim=1), full)
    assert err <= 1e-4, f"{name}: step from init_state differs from forward, max rel err {err:.2e}"


@pytest.mark.parametrize("name", ["mamba", "mamba2", "hades", "smamba", "smamba_observable"])
def test_lm_prefill_and_step_match_forward_logits(name):
    torch.manual_seed(0)
    model = build_model(small_cfg(name)).eval()
    randomize_(model)
    ids = torch.randint(0, SMALL["vocab_size"], (2, 25))
    with torch.no_grad():
        logits = model(ids).logits
        last, state = model.prefill(ids[:, :10])
        steps = [last]
        for t in range(10, ids.shape[1] - 1):
            last, state = model.step(ids[:, t], state)
            steps.append(last)
    err = rel_err(torch.stack(steps, dim=1), logits[:, 9:-1])
    assert err <= 1e-4, f"{name}: decoded logits differ from forward, max rel err {err:.2e}"


# -- HADES reduces to Mamba2 ---------------------------------------------------------------------------
def test_hades_shared_only_without_bias_is_a_mamba2_of_H_heads():
    hcfg = small_cfg("hades_shared_only", gamma_init=0.0)
    H, P = hcfg.n_active, hcfg.head_dim
    assert (H * P) % hcfg.d_model == 0, "choose sizes where a Mamba2 of H heads exists"
    mcfg = dataclasses.replace(hcfg, arch="mamba2", expand=H * P // hcfg.d_model)
    torch.manual_seed(0)
    hades, mamba2 = HadesMixer(hcfg, 0), Mamba2(mcfg, 0)
    randomize_(hades)
    # the router stays (scores only, for L_balance) but must not change the output
    assert mamba2.n_heads == H and hades.h_proj.weight.shape == (hcfg.n_candidates, hcfg.d_model + hcfg.n_filters)

    with torch.no_grad():
        # in_proj rows: HADES [z, x, B, C | dt_raw (M)] -> Mamba2 [z, x, B, C | dt (H)]; the
        # shared slots read the last S = H dt_raw channels (ids E .. M-1).
        w = hades.in_proj.weight
        head = 2 * H * P + 2 * hcfg.n_groups * hcfg.d_state
        mamba2.in_proj.weight.copy_(torch.cat([w[:head], w[head + hcfg.n_candidates :]]))
        mamba2.conv.load_state_dict(hades.conv.state_dict())
        mamba2.dt_bias.copy_(hades.dt_bias.expand(H))  # one scalar shared by every head
        mamba2.A_log.copy_(hades.A_log)
        mamba2.D.copy_(hades.D)
        mamba2.norm.load_state_dict(hades.norm.state_dict())
        mamba2.out_proj.load_state_dict(hades.out_proj.state_dict())

        u = torch.randn(2, 37, hcfg.d_model)
        oh, om = hades(u, return_state=True), mamba2(u, return_state=True)
    torch.testing.assert_close(oh.y, om.y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(oh.state["ssm"], om.state["ssm"], rtol=1e-5, atol=1e-6)
    assert oh.aux["balance"].item() > 0.0, "the unused scores still carry L_balance, as in the authors' code"


def test_hades_shared_only_applies_the_balance_loss_to_its_unused_scores():
    """Q = 0 keeps h_proj (E score outputs) and L_balance = Var(s)/(mean(s)^2 + eps) over all its
    scores, as the authors' code does; its gradient reaches in_proj's dt_raw rows and the input
    u (through r_t), never z, x, B, C or anything after the router."""
    cfg = small_cfg("hades_shared_only")
    M, E, D = cfg.n_filters, cfg.n_candidates, cfg.d_model
    torch.manual_seed(0)
    mixer = HadesMixer(cfg, 0).double()
    randomize_(mixer)
    u = (torch.randn(2, 19, D, dtype=torch.float64) + 0.5).requires_grad_()
    out = mixer(u)
    dt_raw = mixer.in_proj(u)[..., -M:]
    r = u - torch.cumsum(u, dim=1) / torch.arange(1, 20, dtype=torch.float64)[:, None]
    scores = mixer.h_proj(torch.cat([r, dt_raw], dim=-1))
    assert scores.shape[-1] == E
    expect = scores.var() / (scores.mean() ** 2 + 1e-10)
    torch.testing.assert_close(out.aux["balance"], expect.float(), rtol=1e-6, atol=0)

    mixer.zero_grad(set_to_none=True)
    u.grad = None
    mixer(u).aux["balance"].backward()
    g = mixer.in_proj.weight.grad
    assert g[-M:].abs().sum(dim=1).gt(0).all(), "L_balance did not reach every dt_raw row of in_proj"
    assert torch.count_nonzero(g[:-M]) == 0, "L_balance reached in_proj rows other than dt_raw"
    assert u.grad.abs().sum() > 0, "L_balance did not reach the block input"
    assert mixer.h_proj.weight.grad.abs().sum() > 0
    assert mixer.out_proj.weight.grad is None and mixer.A_log.grad is None, "L_balance must not reach past the router"


def test_hades_lm_shared_only_sums_the_balance_loss_over_layers():
    cfg = small_cfg("hades_shared_only")
    torch.manual_seed(0)
    model = build_model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 24))
    out = model(ids, labels=ids)
    assert out.aux_losses["balance"] > 0
    out.loss.backward()
    for i, block in enumerate(model.layers):
        assert block.mixer.h_proj.weight.grad.abs().sum() > 0, f"layer {i}: the scores got no gradient"


def test_hades_with_every_filter_shared_has_no_router():
    """E = 0 (M = S = H): no candidates, so no scores, no h_proj and no balance loss."""
    cfg = small_cfg("hades_shared_only", n_active=8, n_shared=8)
    assert cfg.n_filters == 8 and cfg.n_candidates == 0
    mixer = HadesMixer(cfg, 0)
    assert mixer.h_proj is None
    out = mixer(torch.randn(2, 11, cfg.d_model))
    assert out.aux["balance"].item() == 0.0 and torch.isfinite(out.y).all()


# -- router gradients and parameter groups ---------------------------------------------------------------
def test_router_scores_learn_only_through_the_balance_loss():
    cfg = small_cfg("hades")
    E = cfg.n_candidates
    torch.manual_seed(0)
    mixer = HadesMixer(cfg, 0)
    u = torch.randn(2, 19, cfg.d_model)

    out = mixer(u)
    (out.y.pow(2).mean() + out.aux["diversity"]).backward()
    g = mixer.h_proj.weight.grad
    assert torch.count_nonzero(g[:E]) == 0, "score rows got gradient without L_balance (top-k leaked)"
    assert g[E:].abs().sum() > 0, "spectral-bias rows got no gradient through Δ"

    mixer.zero_grad(set_to_none=True)
    mixer(u).aux["balance"].backward()
    g = mixer.h_proj.weight.grad
    assert g[:E].abs().sum() > 0, "score rows got no gradient from L_balance"
    assert torch.count_nonzero(g[E:]) == 0, "L_balance should not reach the spectral-bias rows"
    assert mixer.out_proj.weight.grad is None, "L_balance must not reach past the router"


def test_router_scores_equal_h_proj_of_the_explicit_spectral_residual():
    """The parallel forward folds the prefix mean into W_r u (`_router_from_u`); that must be
    the paper's h_proj([r_t || dt_raw_t]) with r_t = u_t - mean(u_1..u_t) formed explicitly."""
    cfg = small_cfg("hades")
    torch.manual_seed(0)
    mixer = HadesMixer(cfg, 0).double()
    randomize_(mixer)
    u = torch.randn(2, 23, cfg.d_model, dtype=torch.float64) + 3.0  # a large mean: the cancellation case
    dt_raw = torch.randn(2, 23, cfg.n_filters, dtype=torch.float64)
    r = u - torch.cumsum(u, dim=1) / torch.arange(1, 24, dtype=torch.float64)[:, None]
    expect = mixer.h_proj(torch.cat([r, dt_raw], dim=-1))
    got = mixer._router_from_u(u) + torch.nn.functional.linear(dt_raw, mixer._router_weights()[1])
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
    _, _, ids, scores = mixer._route(mixer._router_from_u(u), dt_raw)
    torch.testing.assert_close(scores, expect[..., : cfg.n_candidates], rtol=1e-12, atol=1e-12)
    assert torch.equal(ids[..., : cfg.n_experts], torch.topk(expect[..., : cfg.n_candidates], cfg.n_experts).indices)


@pytest.mark.parametrize("lambda_balance, expect_grad", [(0.0, False), (1e-3, True)])
def test_lm_router_gradient_follows_lambda_balance(lambda_balance, expect_grad):
    cfg = small_cfg("hades", lambda_balance=lambda_balance)
    torch.manual_seed(0)
    model = build_model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 24))
    model(ids, labels=ids).loss.backward()
    for i, block in enumerate(model.layers):
        g = block.mixer.h_proj.weight.grad
        has = bool(g[: cfg.n_candidates].abs().sum() > 0)
        assert has == expect_grad, f"layer {i}: λ1={lambda_balance}, score-row gradient present: {has}"
        assert g[cfg.n_candidates :].abs().sum() > 0, f"layer {i}: spectral-bias rows got no gradient"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mamba", {"A_log", "D", "dt_proj.bias"}),
        ("mamba2", {"A_log", "D", "dt_bias"}),
        ("hades", {"A_log", "D", "dt_bias", "gamma"}),
        ("smamba", {"A_alpha", "A_beta", "D", "dt_proj.bias"}),
    ],
)
def test_no_weight_decay(name, expected):
    mixer = build_mixer(small_cfg(name), 0)
    assert mixer.no_weight_decay() == expected
    params = dict(mixer.named_parameters())
    assert expected <= params.keys(), f"listed names missing: {expected - params.keys()}"
    model = build_model(small_cfg(name))
    nwd = model.no_weight_decay()
    for n in expected:
        assert f"layers.0.mixer.{n}" in nwd


def test_hades_parameter_shapes_follow_the_paper():
    cfg = small_cfg("hades")
    m = HadesMixer(cfg, 0)
    H, P, M, E, Q = cfg.n_active, cfg.head_dim, cfg.n_filters, cfg.n_candidates, cfg.n_experts
    assert m.dt_bias.shape == (1,), "dt_bias is a single scalar"
    assert m.gamma.shape == m.A_log.shape == m.D.shape == (H,), "γ, A_log, D are per slot"
    assert torch.all(m.gamma == cfg.gamma_init)
    assert m.h_proj.weight.shape == (E + Q, cfg.d_model + M) and m.h_proj.bias is None
    assert m.out_proj.weight.shape == (cfg.d_model, H * P)
    assert m.shared_ids().tolist() == list(range(E, M))
    assert HadesMixer(small_cfg("hades_expert_only"), 0).h_proj.weight.shape == (M + H, cfg.d_model + M)


# -- aux losses, hooks ---------------------------------------------------------------------------------
def test_aux_losses():
    u = torch.randn(2, 16, SMALL["d_model"])
    for name in ("mamba", "mamba2"):
        assert build_mixer(small_cfg(name), 0)(u).aux == {}
    aux = HadesMixer(small_cfg("hades"), 0)(u).aux
    assert set(aux) == {"balance", "diversity"}
    assert all(v.ndim == 0 and torch.isfinite(v) and v >= 0 for v in aux.values()), aux
    # diversity is exactly 0 for orthonormal slots and 1 - 1/H for identical ones
    from hades.models.mixers.hades import balance_loss, diversity_loss

    eye = torch.eye(4).expand(2, 3, 4, 4)
    assert diversity_loss(eye).item() == pytest.approx(0.0)
    assert diversity_loss(torch.ones(2, 3, 4, 5)).item() == pytest.approx(1 - 1 / 4)
    s = torch.tensor([1.0, 2.0, 3.0])
    assert balance_loss(s).item() == pytest.approx(1.0 / 4.0)  # unbiased var 1, mean^2 4


def test_hooks_and_spectral_bias_switch():
    cfg = small_cfg("hades")
    mixer = HadesMixer(cfg, 0)
    seen = {}
    for name in ("hook_slot_outputs", "hook_delta", "hook_delta_no_bias", "hook_routing"):
        getattr(mixer, name).register_forward_hook(lambda mod, inp, out, n=name: seen.__setitem__(n, out))
    B, T, H = 2, 12, cfg.n_active
    u = torch.randn(B, T, cfg.d_model)
    y_on = mixer(u).y
    assert seen["hook_slot_outputs"].shape == (B, T, H, cfg.head_dim)
    assert seen["hook_delta"].shape == seen["hook_delta_no_bias"].shape == (B, T, H)
    ids = seen["hook_routing"]
    assert ids.shape == (B, T, H) and ids.dtype == torch.int64
    assert torch.all(ids[..., cfg.n_experts :] == torch.arange(cfg.n_candidates, cfg.n_filters))
    assert torch.all(ids[..., : cfg.n_experts] < cfg.n_candidates), "experts come from the E candidates"
    # distinct experts per token
    assert all(len(set(row)) == cfg.n_experts for row in ids[..., : cfg.n_experts].reshape(-1, cfg.n_experts).tolist())
    shared = slice(cfg.n_experts, None)
    torch.testing.assert_close(seen["hook_delta"][..., shared], seen["hook_delta_no_bias"][..., shared])
    assert not torch.allclose(seen["hook_delta"], seen["hook_delta_no_bias"]), "γ b changed nothing"

    mixer.spectral_bias = False
    y_off = mixer(u).y
    torch.testing.assert_close(seen["hook_delta"], seen["hook_delta_no_bias"])
    assert not torch.allclose(y_on, y_off)


# -- paper scale and training ----------------------------------------------------------------------------
def test_paper_scale_parameter_counts():
    cfg = load_config("config/paper.yaml")
    counts = {}
    for gid in ("mamba2", "hades"):
        with torch.device("meta"):
            model = build_model(cfg.experiment(gid).model, vocab_size=50277)
        counts[gid] = sum(p.numel() for p in model.parameters())
    assert abs(counts["mamba2"] / 370e6 - 1) <= 0.03, f"Mamba2 has {counts['mamba2'] / 1e6:.1f}M, paper ~370M"
    ratio = counts["hades"] / counts["mamba2"]
    assert abs(ratio - 0.589) <= 0.01, f"HADES/Mamba2 = {ratio:.4f}, paper 58.9%"


@pytest.mark.parametrize("name", ["mamba", "mamba2", "hades", "smamba"])
def test_tiny_lm_learns_a_repeated_pattern(name):
    torch.manual_seed(0)
    cfg = small_cfg(name, n_layer=2)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0)
    pattern = torch.randint(0, cfg.vocab_size, (7,))
    starts = torch.randint(0, 7, (8,))
    ids = torch.stack([pattern.roll(-int(s)).repeat(10)[:64] for s in starts])
    ce = []  # judge the cross-entropy: HADES's L_balance starts huge (Var/mean^2 with mean ~ 0)
    for _ in range(30):
        out = model(ids, labels=ids)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        ce.append((out.loss - sum(out.aux_losses.values(), torch.zeros(()))).item())
    assert all(math.isfinite(v) for v in ce), f"{name}: non-finite loss: {ce}"
    assert ce[-1] < 0.3 * ce[0], f"{name}: cross-entropy {ce[0]:.3f} -> {ce[-1]:.3f} in 30 steps"

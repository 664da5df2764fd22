"""Chain of trust for the attention-style mixers (linear attention, retention, DeltaNet).

1. ops: token loop (the equation) == chunked reference, fp64 tight and fp32, outputs, final
   states and every input gradient, T = 63 (not a multiple of the chunk), with an initial state;
2. mixers: chunked forward == token-by-token `step` from `init_state` (outputs, all state
   entries, parameter gradients), and forward over a prefix + `step` == forward over the whole;
3. fla parity (needs fla's Triton stack; skipped here): our parameter names map onto fla's layer
   and, on CUDA, fla's layer with our weights computes our output.
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch

from hades.config import ModelConfig
from hades.models.mixers import build_mixer
from hades.models.mixers.retnet import retention_log_decay
from kernels.delta_rule import delta_rule_chunked, delta_rule_loop, l2norm
from kernels.linear_attn import linear_attn_chunked, linear_attn_loop

ARCHS = ["linear_attn", "retnet", "deltanet"]
B, T, H, K, V, CHUNK = 2, 63, 3, 8, 6, 16
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=1e-5)}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)


def assert_close_scaled(actual, expected, dtype, what):
    """max|a − e| ≤ tol · max(1, max|e|): fp32 gradients summed over many tokens carry absolute
    error relative to their largest entry, not to each (possibly tiny) entry."""
    tol = TOL[dtype]["atol"] * max(1.0, expected.abs().max().item())
    err = (actual - expected).abs().max().item()
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g} (max |expected| {expected.abs().max().item():.3g})"


def _inputs(dtype, seed=0, delta=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g, dtype=dtype)
    k = torch.randn(B, T, H, K, generator=g, dtype=dtype)
    v = torch.randn(B, T, H, V, generator=g, dtype=dtype)
    S0 = torch.randn(B, H, K, V, generator=g, dtype=dtype)
    beta = torch.rand(B, T, H, generator=g, dtype=dtype)
    if delta:  # the delta rule is only contractive for unit-norm keys (as the mixer feeds it)
        q, k = l2norm(q), l2norm(k)
    xs = [q, k, v, S0] + ([beta] if delta else [])
    return [x.requires_grad_() for x in xs]


def _check_same(fn_a, fn_b, inputs, dtype):
    """Run both op forms, compare outputs, final states and the gradients of every input."""
    outs = []
    for fn in (fn_a, fn_b):
        o, S = fn(*inputs)
        # a random linear functional of (o, S) so every gradient path is exercised
        gen = torch.Generator().manual_seed(1)
        loss = (o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() + (
            S * torch.randn(S.shape, generator=gen, dtype=S.dtype)
        ).sum()
        grads = torch.autograd.grad(loss, inputs)
        outs.append((o, S, grads))
    (o1, S1, g1), (o2, S2, g2) = outs
    torch.testing.assert_close(o2, o1, **TOL[dtype], msg=lambda m: f"output: {m}")
    torch.testing.assert_close(S2, S1, **TOL[dtype], msg=lambda m: f"final state: {m}")
    for i, (a, b) in enumerate(zip(g1, g2)):
        torch.testing.assert_close(b, a, **TOL[dtype], msg=lambda m, i=i: f"grad of input {i}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("decay", [False, True], ids=["linear_attn", "retention"])
def test_linear_attn_loop_equals_chunked(dtype, decay):
    log_decay = retention_log_decay(H).to(dtype) if decay else None
    q, k, v, S0 = _inputs(dtype)
    scale = K**-0.5
    _check_same(
        lambda q, k, v, S0: linear_attn_loop(q, k, v, scale, log_decay, S0),
        lambda q, k, v, S0: linear_attn_chunked(q, k, v, scale, log_decay, S0, chunk_size=CHUNK),
        [q, k, v, S0],
        dtype,
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_delta_rule_loop_equals_chunked(dtype):
    scale = K**-0.5
    _check_same(
        lambda q, k, v, S0, b: delta_rule_loop(q, k, v, b, scale, S0),
        lambda q, k, v, S0, b: delta_rule_chunked(q, k, v, b, scale, S0, chunk_size=CHUNK),
        _inputs(dtype, delta=True),
        dtype,
    )


@pytest.mark.parametrize("chunk", [1, 7, 64, 128])
def test_chunked_any_chunk_size(chunk):
    """Chunk 1, a chunk that does not divide T, and chunks longer than T all agree."""
    q, k, v, S0, beta = (x.detach() for x in _inputs(torch.float64, delta=True))
    ld = retention_log_decay(H).double()
    o1, S1 = linear_attn_loop(q, k, v, 0.5, ld, S0)
    o2, S2 = linear_attn_chunked(q, k, v, 0.5, ld, S0, chunk_size=chunk)
    torch.testing.assert_close(o2, o1, **TOL[torch.float64])
    torch.testing.assert_close(S2, S1, **TOL[torch.float64])
    o1, S1 = delta_rule_loop(q, k, v, beta, 0.5, S0)
    o2, S2 = delta_rule_chunked(q, k, v, beta, 0.5, S0, chunk_size=chunk)
    torch.testing.assert_close(o2, o1, **TOL[torch.float64])
    torch.testing.assert_close(S2, S1, **TOL[torch.float64])


# -- mixers --------------------------------------------------------------------------------------
def _mixer(arch, dtype, seed=0):
    cfg = ModelConfig(arch=arch, d_model=32, num_heads=4, d_conv=4, chunk_size=CHUNK, kernel="reference")
    torch.manual_seed(seed)
    m = build_mixer(cfg, 0)
    for p in m.parameters():  # generic LM init, then the mixer's own, as the LM does
        if p.ndim >= 2:
            torch.nn.init.normal_(p, std=0.2)  # larger than 0.02 so the recurrence matters
    m.init_weights()
    for n, p in m.named_parameters():
        if "conv" in n:
            torch.nn.init.normal_(p, std=0.3)
    return m.to(dtype)


def _step_all(m, u, state):
    ys = []
    for t in range(u.shape[1]):
        y, state = m.step(u[:, t], state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("arch", ARCHS)
def test_mixer_forward_equals_step(arch, dtype):
    m = _mixer(arch, dtype)
    u = torch.randn(B, T, m.cfg.d_model, dtype=dtype, generator=torch.Generator().manual_seed(3))
    w = torch.randn(B, T, m.cfg.d_model, dtype=dtype, generator=torch.Generator().manual_seed(4))

    out = m(u, return_state=True)
    assert out.y.shape == u.shape and out.aux == {}, f"{arch}: y {tuple(out.y.shape)}, aux {out.aux}"
    g_par = torch.autograd.grad((out.y * w).sum(), list(m.parameters()))

    y_rec, st_rec = _step_all(m, u, m.init_state(B, u.device, dtype))
    g_rec = torch.autograd.grad((y_rec * w).sum(), list(m.parameters()))

    tol = TOL[dtype]
    torch.testing.assert_close(out.y, y_rec, **tol, msg=lambda s: f"{arch} output: {s}")
    assert set(out.state) == set(st_rec), f"{arch}: state keys {set(out.state)} vs {set(st_rec)}"
    for key in out.state:
        torch.testing.assert_close(out.state[key], st_rec[key], **tol, msg=lambda s, k=key: f"{arch} state[{k}]: {s}")
    for (name, _), a, b in zip(m.named_parameters(), g_par, g_rec):
        assert_close_scaled(a, b, dtype, f"{arch} grad {name}")


@pytest.mark.parametrize("arch", ARCHS)
def test_mixer_prefix_then_step(arch):
    """forward(prefix, return_state) followed by `step` reproduces forward over everything."""
    m = _mixer(arch, torch.float64)
    u = torch.randn(B, T, m.cfg.d_model, dtype=torch.float64)
    with torch.no_grad():
        full = m(u).y
        split = 37  # not a chunk boundary
        prefix = m(u[:, :split], return_state=True)
        tail, _ = _step_all(m, u[:, split:], prefix.state)
    torch.testing.assert_close(torch.cat([prefix.y, tail], 1), full, **TOL[torch.float64])


@pytest.mark.parametrize("arch", ARCHS)
def test_step_does_not_mutate_state(arch):
    m = _mixer(arch, torch.float64)
    st = m(torch.randn(B, 5, m.cfg.d_model, dtype=torch.float64), return_state=True).state
    before = {k: v.clone() for k, v in st.items()}
    m.step(torch.randn(B, m.cfg.d_model, dtype=torch.float64), st)
    for k in st:
        assert torch.equal(st[k], before[k]), f"{arch}: step modified state[{k!r}] in place"


# -- parity with fla's layers (needs triton; forward parity needs CUDA) ---------------------------
MODULES = {a: f"hades.models.mixers.{a}" for a in ARCHS}
FLA_CLASSES = {"linear_attn": "LinearAttention", "retnet": "MultiScaleRetention", "deltanet": "DeltaNet"}


def _fla_pair(arch, device):
    pytest.importorskip("triton", reason="fla's layers import Triton")
    fla_layers = pytest.importorskip("fla.layers")
    mod = importlib.import_module(MODULES[arch])
    cfg = ModelConfig(arch=arch, d_model=256, num_heads=4, chunk_size=64)
    torch.manual_seed(0)
    ours = build_mixer(cfg, 0)
    for p in ours.parameters():
        if p.ndim >= 2:
            torch.nn.init.normal_(p, std=0.02)
    ours.init_weights()
    theirs = getattr(fla_layers, FLA_CLASSES[arch])(**mod.fla_layer_kwargs(cfg))
    return mod, ours.to(device), theirs.to(device)


@pytest.mark.parametrize("arch", ARCHS)
def test_weight_names_map_onto_fla(arch):
    mod, ours, theirs = _fla_pair(arch, "cpu")
    mapped = {k: tuple(v.shape) for k, v in mod.to_fla_state_dict(ours.state_dict()).items()}
    expected = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert mapped == expected, f"{arch}: only ours {set(mapped) - set(expected)}, only fla {set(expected) - set(mapped)}"
    back = mod.from_fla_state_dict(mod.to_fla_state_dict(ours.state_dict()))
    assert back.keys() == ours.state_dict().keys()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_matches_fla_layer(arch):
    """fla's layer (bf16, Triton) with our weights vs our reference in fp32 and our fast path."""
    mod, ours, theirs = _fla_pair(arch, "cuda")
    theirs.load_state_dict(mod.to_fla_state_dict(ours.state_dict()))
    u = torch.randn(2, 200, 256, device="cuda")
    ours_ref = build_mixer(dataclasses.replace(ours.cfg, kernel="reference"), 0).cuda()
    ours_ref.load_state_dict(ours.state_dict())
    with torch.no_grad():
        ref = ours_ref(u).y  # plain torch, fp32
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fla_y = theirs(u)[0].float()
            fast_y = ours(u).y.float()  # kernel="auto": fla's kernels
    scale = ref.abs().max()
    assert (fla_y - ref).abs().max() / scale < 3e-2, f"{arch}: fla vs reference rel err {(fla_y - ref).abs().max() / scale:.3g}"
    assert (fast_y - fla_y).abs().max() / scale < 3e-2, f"{arch}: our fast path vs fla rel err {(fast_y - fla_y).abs().max() / scale:.3g}"

"""Triton kernels vs their plain-torch references on the GPU: outputs, final states and every
input gradient, fp32 and bf16, odd lengths, NaN-poisoned outputs (conftest), rule in `_tol.py`."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from kernels.conv.reference import causal_conv1d_ref
from kernels.selective_scan.reference import selective_scan_chunked, selective_scan_loop
from kernels.ssd.reference import ssd_chunked, ssd_loop
from kernels.ssd.routing import routed_dt

from ._tol import check

# Triton's CPU interpreter (TRITON_INTERPRET=1) runs these on the CPU, for debugging the tests
DEV = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


def _grads(out, leaves, cot):
    loss = sum((o.double() * c).sum() for o, c in zip(out, cot))
    return torch.autograd.grad(loss, leaves, allow_unused=True)


def _leaf(t, dtype=None):
    t = t if dtype is None else t.to(dtype)
    return t.detach().requires_grad_()


# -- SSD ------------------------------------------------------------------------------------

SSD_SHAPES = [  # batch, seqlen, heads, headdim, dstate, groups
    (2, 63, 4, 64, 128, 1),
    (1, 200, 8, 64, 64, 2),
    (2, 1000, 16, 64, 128, 1),
    (1, 130, 3, 48, 40, 1),
]


def _ssd_inputs(b, t, h, p, n, g, dtype, init, routed, m, seed=0):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    r = lambda *s: torch.randn(*s, device=DEV, generator=gen)  # noqa: E731
    inp = {
        "x": _leaf(r(b, t, h, p), dtype), "B": _leaf(r(b, t, g, n), dtype), "C": _leaf(r(b, t, g, n), dtype),
        "A": _leaf(-torch.exp(r(h) * 0.5)), "D": _leaf(r(h)),
    }
    if routed:
        inp["dt_raw"] = _leaf(r(b, t, m) - 2.0)
        inp["slot_ids"] = torch.argsort(torch.rand(b, t, m, device=DEV, generator=gen), dim=-1)[..., :h]
        inp["slot_bias"] = _leaf(0.3 * r(b, t, h))
        inp["dt_bias"] = _leaf(0.5 * r(h))
    else:
        inp["dt"] = _leaf(F.softplus(r(b, t, h) - 1.0))
    if init:
        inp["initial_state"] = _leaf(r(b, h, p, n))
    return inp


def _ssd_call(fn_routed, fn_plain, inp, **kw):
    if "dt_raw" in inp:
        return fn_routed(inp["x"], inp["dt_raw"], inp["A"], inp["B"], inp["C"], inp["D"], dt_bias=inp["dt_bias"],
                         slot_ids=inp["slot_ids"], slot_bias=inp["slot_bias"], initial_state=inp.get("initial_state"), **kw)
    return fn_plain(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], inp["D"], initial_state=inp.get("initial_state"), **kw)


def _ssd_ref(inp, cast):
    """The plain-torch composition (routed_dt -> ssd_chunked) on inputs cast by `cast`."""
    c = {k: (cast(v) if torch.is_floating_point(v) else v) for k, v in inp.items()}
    if "dt_raw" in c:
        dt = routed_dt(c["dt_raw"], c["slot_ids"], c["slot_bias"], c["dt_bias"])
    else:
        dt = c["dt"]
    return ssd_chunked(c["x"], dt, c["A"], c["B"], c["C"], c["D"], initial_state=c.get("initial_state"))


@pytest.mark.parametrize("shape", SSD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("mode", ["plain", "plain_init", "routed", "routed_init", "plain_recompute", "routed_init_recompute"])
def test_ssd_matches_reference(shape, dtype, mode, monkeypatch):
    """Every mode with the chunk states stored by the forward (op.SAVE_STATES, the default);
    *_recompute with the backward recomputing them."""
    import kernels.ssd.op as op
    from kernels.ssd.op import ssd_scan, ssd_scan_routed

    monkeypatch.setattr(op, "SAVE_STATES", not mode.endswith("recompute"))
    b, t, h, p, n, g = shape
    routed, init = mode.startswith("routed"), "init" in mode
    inp = _ssd_inputs(b, t, h, p, n, g, dtype, init, routed, m=h + 5)
    leaves = [k for k, v in inp.items() if v.requires_grad]
    y, fin = _ssd_call(ssd_scan_routed, ssd_scan, inp)
    assert y.dtype == dtype and fin.dtype == torch.float32
    cot = (torch.randn(y.shape, device=DEV, dtype=torch.float64), torch.randn(fin.shape, device=DEV, dtype=torch.float64))
    g_ours = _grads((y, fin), [inp[k] for k in leaves], cot)
    refs = {}  # fp64 oracle, and plain torch on the same low-precision inputs (the 2x rule)
    for tag, cast in (("ref", lambda v: v.detach().double().requires_grad_()), ("low", lambda v: v.detach().requires_grad_())):
        c = {k: (cast(v) if torch.is_floating_point(v) else v) for k, v in inp.items()}
        out = _ssd_ref(c, lambda v: v)
        refs[tag] = (out, _grads(out, [c[k] for k in leaves], cot))
    (yr, fr), g_ref = refs["ref"]
    (yl, fl), g_low = refs["low"]
    check(f"ssd {mode} {shape} y", y, yr, dtype, yl)
    check(f"ssd {mode} {shape} final_state", fin, fr, dtype, fl)
    for k, go, gr, gl in zip(leaves, g_ours, g_ref, g_low):
        check(f"ssd {mode} {shape} d{k}", go, gr, dtype, gl)


def test_ssd_chain_of_trust_loop():
    """Triton == the token-by-token loop (the ground truth), fp32, odd length."""
    from kernels.ssd.op import ssd_scan

    inp = _ssd_inputs(1, 77, 2, 32, 16, 1, torch.float32, True, False, 0, seed=3)
    y, fin = ssd_scan(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], inp["D"], inp["initial_state"], chunk_size=32)
    c = {k: v.detach().double() for k, v in inp.items()}
    yr, fr = ssd_loop(c["x"], c["dt"], c["A"], c["B"], c["C"], c["D"], c["initial_state"])
    check("ssd loop y", y, yr, torch.float32)
    check("ssd loop final_state", fin, fr, torch.float32)


def test_ssd_public_entry_uses_triton():
    import kernels.ssd as ssd

    assert ssd._triton_op() is not None, "kernels.ssd.op must import on a CUDA machine with Triton"


# -- selective scan -------------------------------------------------------------------------

SS_SHAPES = [(2, 63, 64, 16), (1, 300, 96, 8), (2, 1000, 256, 16), (1, 40, 50, 5)]  # batch, seqlen, channels, dstate

# forward kernels: the tile order "tcn", the token-by-token "seq" and "split" (seq with each
# channel's states over 4 lanes), the last two with a time tile that differs from the backward's,
# whose states they store: (layout, its CONFIG entry and launch parameters)
SS_FWD = {
    "tcn": ("tcn", None),
    "seq": ("seq", ("fwd_seq", dict(BLOCK_T=4, BLOCK_C=32, num_warps=1))),
    "split": ("split", ("fwd_split", dict(BLOCK_T=4, NG=4, num_warps=1, pairs=True))),
    "split_shfl_ring3": ("split", ("fwd_split", dict(BLOCK_T=4, NG=4, num_warps=1, pairs=True, NBUF=3, shfl_ud=True))),
}


@pytest.fixture(params=list(SS_FWD))
def ss_fwd(request, monkeypatch):
    """Runs the test with the forward kernel of this layout."""
    import kernels.selective_scan.op as op

    layout, launch = SS_FWD[request.param]
    monkeypatch.setitem(op.CONFIG, "fwd", dict(op.CONFIG["fwd"], layout=layout))
    if launch is not None:
        monkeypatch.setitem(op.CONFIG, *launch)
        if launch[0] == "fwd_split":  # the training forward (states stored) with the same kernel
            monkeypatch.setitem(op.CONFIG, "fwd_split_train", launch[1])
    return request.param


@pytest.mark.parametrize("shape", SS_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("mode", ["plain", "init_noncontig", "noD"])
def test_selective_scan_matches_reference(shape, dtype, mode, ss_fwd):
    from kernels.selective_scan.op import selective_scan

    b, t, c, n = shape
    gen = torch.Generator(device=DEV).manual_seed(1)
    r = lambda *s: torch.randn(*s, device=DEV, generator=gen)  # noqa: E731
    if mode == "init_noncontig":  # u as a slice of a wider projection, as in the mixer
        u = _leaf(r(b, t, 2 * c).to(dtype)[..., c:])
    else:
        u = _leaf(r(b, t, c), dtype)
    inp = {
        "u": u, "delta": _leaf(F.softplus(r(b, t, c) - 1.0), dtype),
        "A": _leaf(-torch.exp(r(c, n) * 0.5)), "B": _leaf(r(b, t, n), dtype), "C": _leaf(r(b, t, n), dtype),
    }
    if mode != "noD":
        inp["D"] = _leaf(r(c))
    if mode == "init_noncontig":
        inp["initial_state"] = _leaf(r(b, c, n))
    names = list(inp)

    def call(fn, d):
        return fn(d["u"], d["delta"], d["A"], d["B"], d["C"], d.get("D"), initial_state=d.get("initial_state"))

    y, fin = call(selective_scan, inp)
    cot = None
    res = {}
    for tag, cast in (("ref", lambda v: v.detach().double().requires_grad_()), ("low", lambda v: v.detach().requires_grad_())):
        d = {k: cast(v) for k, v in inp.items()}
        out = call(selective_scan_chunked, d)
        cot = cot or (torch.randn_like(out[0].double()), torch.randn_like(out[1].double()))
        res[tag] = (out, _grads(out, [d[k] for k in names], cot))
    g_ours = _grads((y, fin), [inp[k] for k in names], cot)
    (yr, fr), g_ref = res["ref"]
    (yl, fl), g_low = res["low"]
    check(f"ss {ss_fwd} {mode} {shape} y", y, yr, dtype, yl)
    check(f"ss {ss_fwd} {mode} {shape} final_state", fin, fr, dtype, fl)
    for k, go, gr, gl in zip(names, g_ours, g_ref, g_low):
        check(f"ss {ss_fwd} {mode} {shape} d{k}", go, gr, dtype, gl)


def test_selective_scan_chain_of_trust_loop(ss_fwd):
    from kernels.selective_scan.op import selective_scan

    gen = torch.Generator(device=DEV).manual_seed(2)
    r = lambda *s: torch.randn(*s, device=DEV, generator=gen)  # noqa: E731
    u, dl, A, B, C, D, s0 = r(1, 45, 32), F.softplus(r(1, 45, 32)), -torch.exp(r(32, 16)), r(1, 45, 16), r(1, 45, 16), r(32), r(1, 32, 16)
    y, fin = selective_scan(u, dl, A, B, C, D, initial_state=s0)
    yr, fr = selective_scan_loop(*(v.double() for v in (u, dl, A, B, C, D, s0)))
    check(f"ss {ss_fwd} loop y", y, yr, torch.float32)
    check(f"ss {ss_fwd} loop final_state", fin, fr, torch.float32)


# -- short conv -----------------------------------------------------------------------------

CONV_CASES = [(2, 63, 96, 4, True, True), (1, 1000, 2304, 4, True, True), (2, 50, 40, 4, False, True), (1, 70, 64, 3, True, False),
              (2, 3, 48, 4, True, True)]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["stream", "tile", "stream_t16_seg64"])
def test_conv_matches_reference(case, dtype, layout, monkeypatch):
    """The default forward and backward ("stream"), the first ones ("tile"), and the stream
    kernels with another tile and segment (1000 tokens: 16 segments, the last one partial)."""
    import kernels.conv.op as op
    from kernels.conv.op import causal_conv1d

    for key in ("fwd", "bwd"):
        cfg = dict(op.CONFIG[key], layout=layout.split("_")[0])
        if layout == "stream_t16_seg64":
            cfg.update(BLOCK_T=16, BLOCK_C=64, SEG=64, num_warps=1)
        monkeypatch.setitem(op.CONFIG, key, cfg)

    b, t, c, k, bias, act = case
    gen = torch.Generator(device=DEV).manual_seed(4)
    r = lambda *s: torch.randn(*s, device=DEV, generator=gen)  # noqa: E731
    x = _leaf(r(b, t, 2 * c).to(dtype)[..., :c])  # non-contiguous, as a slice of a projection
    w = _leaf(r(c, k) * 0.5)
    bi = _leaf(r(c)) if bias else None
    leaves = [x, w] + ([bi] if bias else [])
    y = causal_conv1d(x, w, bi, act)
    cot = torch.randn(y.shape, device=DEV, dtype=torch.float64)
    ref_leaves = [v.detach().double().requires_grad_() for v in leaves]
    yr = causal_conv1d_ref(ref_leaves[0], ref_leaves[1], ref_leaves[2] if bias else None, act)
    check(f"conv {case} y", y, yr, dtype)
    for name, go, gr in zip(["dx", "dw", "db"], _grads((y,), leaves, (cot,)), _grads((yr,), ref_leaves, (cot,))):
        check(f"conv {case} {name}", go, gr, dtype)


SS_SPLIT = {  # (BLOCK_T, NG, num_warps, pairs, bc_fp32, NBUF, shfl_ud)
    "split": (4, 4, 1, True, False), "split_ng2_2warps": (8, 2, 2, True, False), "split_ng1": (4, 1, 1, True, False),
    "split_ng8_t2": (2, 8, 1, True, False), "split_nopairs": (4, 4, 1, False, False), "split_bcf32": (4, 2, 1, True, True),
    "split_default": (16, 4, 1, True, False, 2, True), "split_train_default": (8, 4, 1, True, False, 2),
    "split_shfl_ng2_2warps_ring4": (4, 2, 2, True, False, 4, True),
}


@pytest.mark.parametrize("layout", ["tcn", "tnc", "seq", "seq_2warps", "seq_t16", "seq_bcf32", *SS_SPLIT])
def test_selective_scan_forward_layouts(layout, monkeypatch):
    """Every forward kernel computes the reference (bf16 and fp32, with a backward); "seq" also
    with two warps, a time tile longer than the backward's, and B, C converted to fp32; "split"
    with 1, 2, 4, 8 lanes per channel, two warps, time tiles of 2 to 8, B and C not as pairs, and
    B and C converted to fp32 first (a time tile longer than the backward's, 16, compiles for a
    minute: tests/test_selective_scan_reference.py runs it in the interpreter)."""
    import kernels.selective_scan.op as op

    monkeypatch.setitem(op.CONFIG, "fwd", dict(BLOCK_T=4, BLOCK_C=64, num_warps=2, layout=layout.split("_")[0]))
    seq = {"seq_2warps": (4, 64, 2, False), "seq_t16": (16, 32, 1, False), "seq_bcf32": (2, 32, 1, True)}.get(layout, (8, 32, 1, False))
    monkeypatch.setitem(op.CONFIG, "fwd_seq", dict(zip(("BLOCK_T", "BLOCK_C", "num_warps", "bc_fp32"), seq)))
    split = SS_SPLIT.get(layout, SS_SPLIT["split"])
    keys = ("BLOCK_T", "NG", "num_warps", "pairs", "bc_fp32", "NBUF", "shfl_ud")
    monkeypatch.setitem(op.CONFIG, "fwd_split", dict(zip(keys, split)))
    # the training forward (states stored) runs the same kernel; the default pair as in op.CONFIG
    # (BLOCK_T 16 with states compiles for a minute)
    train = SS_SPLIT["split_train_default"] if layout == "split_default" else split
    monkeypatch.setitem(op.CONFIG, "fwd_split_train", dict(zip(keys, train)))
    gen = torch.Generator(device=DEV).manual_seed(5)
    r = lambda *s: torch.randn(*s, device=DEV, generator=gen)  # noqa: E731
    for dtype in (torch.float32, torch.bfloat16):
        d = {"u": _leaf(r(2, 301, 200), dtype), "delta": _leaf(F.softplus(r(2, 301, 200) - 1.0), dtype),
             "A": _leaf(-torch.exp(r(200, 16) * 0.5)), "B": _leaf(r(2, 301, 16), dtype), "C": _leaf(r(2, 301, 16), dtype),
             "D": _leaf(r(200))}
        y, fin = op.selective_scan(d["u"], d["delta"], d["A"], d["B"], d["C"], d["D"])
        ref = {k: v.detach().double().requires_grad_() for k, v in d.items()}
        yr, fr = selective_scan_chunked(ref["u"], ref["delta"], ref["A"], ref["B"], ref["C"], ref["D"])
        check(f"ss layout {layout} y", y, yr, dtype)
        check(f"ss layout {layout} final_state", fin, fr, dtype)
        cot = (torch.randn_like(yr), torch.randn_like(fr))
        for k, go, gr in zip(d, _grads((y, fin), list(d.values()), cot), _grads((yr, fr), list(ref.values()), cot)):
            check(f"ss layout {layout} d{k}", go, gr, dtype)


# the backward kernels: "split" (BLOCK_T, NG, CT, num_warps, recompute_a, prefetch[, rs]) and the first
# round's "tile"; the training forward stores states every min(8, BLOCK_T) tokens
SS_BWD = {
    "split_default": None,
    "split_t4_ct4": (4, 4, 4, 1, True, True), "split_t8_ct4": (8, 4, 4, 1, True, True),
    "split_keep_a_no_prefetch": (8, 4, 2, 1, False, False), "split_ng2_2warps": (4, 2, 2, 2, True, True),
    "split_ng8_ct1": (2, 8, 1, 1, True, True), "split_ng1": (4, 1, 2, 1, True, True), "split_t16": (16, 4, 1, 1, True, False),
    "split_all_reduce": (8, 4, 2, 1, True, True, False), "split_ng8_ct4": (8, 8, 4, 1, True, True),
    "tile": "tile",
}


SS_ACT = {"plain": None, "softplus_bias": True, "softplus": False}  # Mamba's time step in the kernels


@pytest.mark.parametrize("shape", [(2, 301, 200, 16), (1, 77, 96, 5), (3, 16, 64, 16)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bwd", list(SS_BWD))
@pytest.mark.parametrize("act", list(SS_ACT))
def test_selective_scan_backward_layouts(bwd, shape, act, monkeypatch):
    """Every backward kernel and launch variant gives the reference's gradients (fp32 and bf16,
    with D, an initial state and a gradient of the final state): odd lengths (a partial last
    tile), a length that is a multiple of the tile, N = 5 (masked states), channels that are not
    a multiple of the program's; act: delta a pre-activation of either sign, softplus(delta +
    bias) (and its gradients, the bias's included) computed in the split kernels (the tile
    layout: in torch before them)."""
    import kernels.selective_scan.op as op
    from kernels.selective_scan.reference import delta_activation

    if act != "plain" and bwd not in ("split_default", "split_all_reduce", "split_ng2_2warps", "split_ng8_ct4", "tile"):
        pytest.skip("the time step's activation: the default, the all-reduce path, two warps, NG 8, the tile fallback")

    cfg = SS_BWD[bwd]
    if cfg == "tile":
        monkeypatch.setitem(op.CONFIG, "bwd", dict(op.CONFIG["bwd"], layout="tile"))
    elif cfg is not None:
        keys = ("BLOCK_T", "NG", "CT", "num_warps", "recompute_a", "prefetch", "rs")
        monkeypatch.setitem(op.CONFIG, "bwd", dict(op.CONFIG["bwd"], layout="split", **dict(zip(keys, cfg))))
    bt = op.CONFIG["bwd"]["BLOCK_T"]
    monkeypatch.setitem(op.CONFIG, "fwd_split_train", dict(op.CONFIG["fwd_split_train"], BLOCK_T=min(8, bt)))
    b, t, c, n = shape
    gen = torch.Generator(device=DEV).manual_seed(6)
    r = lambda *s: torch.randn(*s, device=DEV, generator=gen)  # noqa: E731
    for dtype in (torch.float32, torch.bfloat16):
        d = {"u": _leaf(r(b, t, c), dtype), "delta": _leaf(F.softplus(r(b, t, c) - 1.0), dtype),
             "A": _leaf(-torch.exp(r(c, n) * 0.5)), "B": _leaf(r(b, t, n), dtype), "C": _leaf(r(b, t, n), dtype),
             "D": _leaf(r(c)), "initial_state": _leaf(r(b, c, n))}
        softplus, kw = SS_ACT[act] is not None, {}
        if softplus:
            d["delta"] = _leaf(2 * r(b, t, c) - 1.0, dtype)
            if SS_ACT[act]:
                d["delta_bias"] = _leaf(r(c) - 1.0)
            kw = {"delta_bias": d.get("delta_bias"), "delta_softplus": True}
        y, fin = op.selective_scan(d["u"], d["delta"], d["A"], d["B"], d["C"], d["D"], initial_state=d["initial_state"], **kw)
        ref = {k: v.detach().double().requires_grad_() for k, v in d.items()}
        yr, fr = selective_scan_chunked(ref["u"], delta_activation(ref["delta"], ref.get("delta_bias"), softplus), ref["A"],
                                        ref["B"], ref["C"], ref["D"], initial_state=ref["initial_state"])
        cot = (torch.randn_like(yr), torch.randn_like(fr))
        for k, go, gr in zip(d, _grads((y, fin), list(d.values()), cot), _grads((yr, fr), list(ref.values()), cot)):
            check(f"ss bwd {bwd} {act} {shape} d{k}", go, gr, dtype)


@pytest.mark.parametrize("shape", [(2, 301, 200, 16), (1, 77, 96, 5), (8, 2048, 256, 16)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("fwd", ["default", "split", "split_shfl_ring3"])
def test_selective_scan_eval_activation(shape, bias, fwd, monkeypatch):
    """The forward without a gradient (evaluation) computes softplus(delta + bias) in the split
    kernel, at the default launch (BLOCK_T 16, bf16 u and delta read by lane-group shuffles,
    which the interpreter cannot run) and two others: y and the final state against fp64 on the
    same rounded inputs."""
    import kernels.selective_scan.op as op
    from kernels.selective_scan.reference import delta_activation

    if fwd != "default":
        monkeypatch.setitem(op.CONFIG, *SS_FWD[fwd][1])
    b, t, c, n = shape
    gen = torch.Generator(device=DEV).manual_seed(8)
    r = lambda *s: torch.randn(*s, device=DEV, generator=gen)  # noqa: E731
    for dtype in (torch.float32, torch.bfloat16):
        d = {"u": r(b, t, c).to(dtype), "delta": (2 * r(b, t, c) - 1.0).to(dtype), "A": -torch.exp(r(c, n) * 0.5),
             "B": r(b, t, n).to(dtype), "C": r(b, t, n).to(dtype), "D": r(c), "initial_state": r(b, c, n)}
        db = r(c) - 1.0 if bias else None
        with torch.no_grad():
            y, fin = op.selective_scan(**d, delta_bias=db, delta_softplus=True)
        ref = {k: v.double() for k, v in d.items()}
        ref["delta"] = delta_activation(ref["delta"], None if db is None else db.double(), True)
        yr, fr = selective_scan_chunked(**ref)
        low = dict(d, delta=delta_activation(d["delta"], db, True))
        yl, fl = selective_scan_chunked(**{k: v.float() if k == "delta" else v for k, v in low.items()})
        check(f"ss eval softplus {bias} {shape} y", y, yr, dtype, yl)
        check(f"ss eval softplus {bias} {shape} final_state", fin, fr, dtype, fl)


# -- Mamba's output gate -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 2048, 2048), (2, 301, 1500), (1, 7, 96)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("slab", [False, True], ids=["fresh", "slab"])
def test_silu_gate_matches_reference(shape, dtype, slab):
    """y * silu(z) and dy, dz against fp64, z sliced out of an in-projection (strided); with a
    slab, z's gradient lands in it in place and the split's gradient equals torch.split's."""
    from kernels.gate import op
    from kernels.slab import GradSlab

    b, t, d = shape
    gen = torch.Generator(device=DEV).manual_seed(8)
    xz = _leaf(2 * torch.randn(b, t, 2 * d, device=DEV, generator=gen), dtype)
    y = _leaf(torch.randn(b, t, d, device=DEV, generator=gen), dtype)
    sl = GradSlab(xz, [d, d]) if slab else None
    x, z = sl.split(xz) if slab else xz.chunk(2, dim=-1)
    in_place = []
    if slab:
        z.register_hook(lambda gz: in_place.append(gz.data_ptr() == sl.view(1).data_ptr()))
    out = op.silu_gate(y, z, dz_into=sl and sl.part(1))
    cot = (torch.randn(out.shape, device=DEV, dtype=torch.float64), torch.randn(x.shape, device=DEV, dtype=torch.float64))
    g = _grads((out, x), [y, xz], cot)
    assert in_place == ([True] if slab else []), "z's gradient was not written into the slab"
    ref = [v.detach().double().requires_grad_() for v in (y, xz)]
    out_r = ref[0] * F.silu(ref[1][..., d:])
    g_r = _grads((out_r, ref[1][..., :d]), ref, cot)
    check(f"gate {shape} out", out, out_r, dtype)
    for k, go, gr in zip(("dy", "d(x, z)"), g, g_r):
        check(f"gate {shape} {k}", go, gr, dtype)


# -- HADES's in_proj + router product ----------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 333, 1024, 2336, 32), (1, 70, 96, 50, 24)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("du", ["rows", "tile", "rows_32x64_s2"])
def test_router_proj_matches_reference(shape, dtype, du, monkeypatch):
    """z (in_proj in `dtype`), v (fp32) and the gradients of u (both paths summed), W_in and W_r
    (a column slice of h_proj's weight) against fp64; rows and columns not multiples of the tiles;
    du by either kernel."""
    from kernels.router import op as router_op
    from kernels.router.op import in_router_proj

    if du == "rows_32x64_s2":
        monkeypatch.setitem(router_op.CONFIG, "du_rows", (32, 64, 4, 2))
    monkeypatch.setitem(router_op.CONFIG, "du_layout", du.split("_")[0])
    from kernels.router.reference import in_router_proj_ref

    b, t, d, f, r = shape
    gen = torch.Generator(device=DEV).manual_seed(7)
    u = _leaf(torch.randn(b, t, d, device=DEV, generator=gen))
    w_in = _leaf(torch.randn(f, d, device=DEV, generator=gen) * d**-0.5)
    h_w = _leaf(torch.randn(r, d + 16, device=DEV, generator=gen) * d**-0.5)
    z, v = in_router_proj(u, w_in, h_w[:, :d], dtype)
    assert z.dtype == dtype and v.dtype == torch.float32
    cot = (torch.randn(z.shape, device=DEV, dtype=torch.float64), torch.randn(v.shape, device=DEV, dtype=torch.float64))
    ref_leaves = [x.detach().double().requires_grad_() for x in (u, w_in, h_w)]
    zr, vr = in_router_proj_ref(ref_leaves[0], ref_leaves[1], ref_leaves[2][:, :d], torch.float64)
    low_leaves = [x.detach().requires_grad_() for x in (u, w_in, h_w)]
    zl, vl = in_router_proj_ref(low_leaves[0], low_leaves[1], low_leaves[2][:, :d], dtype)
    check(f"router {shape} z", z, zr, dtype, zl)
    assert torch.equal(z, zl), "z: the router kernel's copy of u in the in_proj dtype is not u.to(dtype) (rounding)"
    check(f"router {shape} v", v, vr, torch.float32)  # fp32 in both dtypes
    g, gr, gl = _grads((z, v), [u, w_in, h_w], cot), _grads((zr, vr), ref_leaves, cot), _grads((zl, vl), low_leaves, cot)
    for k, go, gref, glow in zip(("du", "dW_in", "dW_r"), g, gr, gl):
        check(f"router {shape} {k}", go, gref, dtype, glow)

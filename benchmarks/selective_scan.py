"""Benchmark of the Triton selective scan (S6) at Mamba-370M's shape (issue 4, acceptance 2).

    python -m benchmarks.selective_scan [--sweep] [--sweep-fwd] [--sweep-bwd] [--official DIR]

batch 8 x 2048 tokens, D = 2048 channels (expand 2 x width 1024), N = 16 states, bf16 u/delta/B/C,
fp32 A/D. Times (median ms) ours forward (no autograd) and forward+backward against a naive
PyTorch scan (`reference.selective_scan_loop`: one step per token, fp32) and the chunked
reference; prints the memory-traffic floor (u, delta, B, C read once, y written once) and the
special-function floor (one exp2 per (token, channel, state) at 16 / clock / SM).
Goals: >= 50x the naive scan; forward within 4x of the memory floor.

--sweep-fwd: every forward kernel (layouts tcn, tnc, seq, split) and the launch parameters of
seq and split (BLOCK_T; split: NG lanes per channel, num_warps, B and C read as bf16 pairs or
converted to fp32 before the kernel), each timed
without autograd (median, warm-up excluded) and checked against the seq kernel's output; the
fastest few also as the training forward, which stores the states for the backward. The
candidates compile in parallel first (Triton's async compile, threads). Keeps the fastest in
op.CONFIG for the main table; prints one table.

--official DIR: ours beside mamba_ssm's selective-scan CUDA kernels on identical inputs (DIR from
`scripts/official_ss_package.sh`, e.g. .device/official_ss; `official`'s docstring says what is
timed); --official-only skips the main table.
"""

from __future__ import annotations

import argparse
import functools

import torch
import torch.nn.functional as F

from benchmarks.common import (
    PEAK_BYTES,
    bench,
    bench_slow,
    environment,
    kernel_ms,
    mufu_rate,
    save,
    table,
    warm_gpu,
)


def make_inputs(b, t, c, n, dtype=torch.bfloat16, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    return dict(u=r(b, t, c).to(dtype), delta=F.softplus(r(b, t, c) - 2.0).to(dtype), A=-torch.exp(r(c, n) * 0.5),
                B=r(b, t, n).to(dtype), C=r(b, t, n).to(dtype), D=r(c))


def runner(inp, fn, grad):
    leaves = {k: v.detach().requires_grad_(grad) for k, v in inp.items()}
    dy = torch.randn_like(inp["u"]) if grad else None

    def call():
        d = leaves
        return fn(d["u"], d["delta"], d["A"], d["B"], d["C"], d["D"])

    def fwd():
        with torch.no_grad():
            call()

    def fwdbwd():
        y, _ = call()
        y.backward(dy)

    return (fwdbwd if grad else fwd), list(leaves.values())


def sweep(inp, log):
    """Time every candidate launch configuration; keep the fastest of each pass in op.CONFIG and
    print one table. Forward candidates of layout "seq" set CONFIG["fwd_seq"]."""
    import kernels.selective_scan.op as op
    from kernels.selective_scan.op import selective_scan

    fwd = [dict(layout="tcn", BLOCK_T=bt, BLOCK_C=bc, num_warps=w) for bt, bc, w in ((8, 32, 4), (4, 32, 4), (8, 16, 2))]
    fwd += [dict(layout="tnc", BLOCK_T=bt, BLOCK_C=bc, num_warps=w) for bt, bc, w in ((8, 128, 4), (8, 32, 1))]
    fwd += [dict(layout="seq", BLOCK_T=bt, BLOCK_C=bc, num_warps=w, bc_fp32=f32) for bt, bc, w, f32 in (
        (2, 32, 1, False), (4, 32, 1, False), (8, 32, 1, False), (4, 64, 2, False), (4, 128, 4, False),
        (2, 32, 1, True), (4, 32, 1, True), (2, 64, 2, True))]
    space = {"fwd": fwd, "bwd": [dict(BLOCK_T=bt, BLOCK_C=bc, num_warps=w) for bt, bc, w in ((8, 32, 4), (4, 32, 4), (8, 16, 2))]}
    keep = {k: dict(v) for k, v in op.CONFIG.items()}
    rows = []
    for name, cands in space.items():
        best = None
        for cand in cands:
            cfg = {k: dict(v) for k, v in keep.items()}
            launch = {k: v for k, v in cand.items() if k != "layout"}
            if cand.get("layout") == "seq":
                cfg["fwd"]["layout"], cfg["fwd_seq"] = "seq", launch
            else:
                cfg[name] = dict(cand)
            op.CONFIG.update(cfg)
            fn, leaves = runner(inp, selective_scan, name == "bwd")
            try:
                ms = bench(fn, rep_ms=100, grad_to_none=leaves if name == "bwd" else None)
            except Exception as e:  # noqa: BLE001 - a config that does not compile is skipped
                ms = None
                err = f"{type(e).__name__}: {str(e).splitlines()[0][:60] if str(e) else ''}"
            log.append({"kernel": name, **cand, "ms": ms if ms is not None else f"error {err}"})
            rows.append({"pass": name, "layout": cand.get("layout", "-"), "BLOCK_T": cand["BLOCK_T"],
                         "BLOCK_C": cand["BLOCK_C"], "num_warps": cand["num_warps"], "bc_fp32": cand.get("bc_fp32", "-"),
                         "ms": f"{ms:.3f}" if ms is not None else err, "best": ""})
            if ms is not None and (best is None or ms < best[0]):
                best = (ms, cfg, rows[-1])
        keep = best[1]
        best[2]["best"] = "*"
    op.CONFIG.update(keep)
    print("sweep (median ms)\n" + table(rows, ["pass", "layout", "BLOCK_T", "BLOCK_C", "num_warps", "bc_fp32", "ms", "best"]), flush=True)
    return dict(op.CONFIG)


# --sweep-fwd candidates: (layout, the CONFIG entry it reads, launch parameters)
FWD_CANDIDATES = (
    [("tcn", "fwd", dict(BLOCK_T=8, BLOCK_C=32, num_warps=4)), ("tnc", "fwd", dict(BLOCK_T=8, BLOCK_C=32, num_warps=1))]
    + [("seq", "fwd_seq", dict(BLOCK_T=bt, BLOCK_C=32, num_warps=1, bc_fp32=False)) for bt in (2, 4, 8)]
    + [("split", "fwd_split", dict(BLOCK_T=bt, NG=ng, num_warps=w, pairs=p, bc_fp32=f32)) for bt, ng, w, p, f32 in (
        (2, 4, 1, True, False), (4, 4, 1, True, False), (8, 4, 1, True, False), (4, 4, 2, True, False),
        (4, 4, 4, True, False), (4, 4, 1, False, False), (4, 4, 1, True, True), (8, 4, 1, True, True),
        (2, 2, 1, True, False), (4, 2, 1, True, False), (8, 2, 1, True, False), (4, 2, 2, True, False),
        (2, 2, 1, True, True), (4, 2, 1, True, True),
        (2, 1, 1, True, False), (4, 1, 1, True, False), (4, 1, 1, True, True),
        (4, 8, 1, True, False), (8, 8, 1, True, False),
        (8, 4, 1, False, False), (8, 4, 2, True, False), (16, 4, 1, True, False))]
    # the ring of tile buffers (NBUF), u and delta shuffled from one load per NG tokens (shfl_ud)
    + [("split", "fwd_split", dict(BLOCK_T=bt, NG=4, num_warps=1, pairs=True, bc_fp32=False, NBUF=nb, shfl_ud=sh))
       for bt, nb, sh in ((8, 2, False), (4, 3, False), (4, 4, False), (8, 2, True), (16, 2, True), (4, 4, True))]
)
SEQ_DEFAULT = dict(BLOCK_T=4, BLOCK_C=32, num_warps=1, bc_fp32=False)  # the reference of the error column


def _fwd_config(base, layout, entry, launch):
    cfg = {k: dict(v) for k, v in base.items()}
    cfg["fwd"]["layout"] = layout
    cfg[entry] = dict(cfg[entry], **launch) if entry == "fwd" else dict(launch)
    if entry == "fwd_split":  # the candidate also runs the training forward (its train_fwd_ms)
        cfg["fwd_split_train"] = dict(launch)
    return cfg


def _compile_parallel(configs, compile_one):
    """compile_one(cfg, launch) for every config in parallel threads (Triton's async compile; the
    compiler runs without the GIL), launch being the op's launch hook that only compiles
    (kernel.warmup): the unrolled split kernels take seconds to tens of seconds each. A config
    that fails is skipped (the sweep reports it when it runs it). Where that API is missing, each
    compiles on first use instead."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    try:
        from triton.runtime._async_compile import AsyncCompileMode
    except ImportError:
        return
    workers = max(1, min(16, (os.cpu_count() or 2) - 1))
    with ThreadPoolExecutor(workers) as ex, AsyncCompileMode(ex, ignore_errors=True):
        for cfg in configs:
            try:
                compile_one(cfg, lambda kernel, grid: functools.partial(kernel.warmup, grid=grid))
            except Exception:  # noqa: BLE001 - the sweep reports it when it runs the config
                pass


def _precompile(inp, configs, store_states):
    """Compile the forward kernel of every config (`_compile_parallel`)."""
    import kernels.selective_scan.op as op

    a2 = (inp["A"].float() * op.LOG2E).contiguous()  # as SelectiveScan.forward passes them

    def one(cfg, launch):
        block_t = cfg["bwd" if store_states else "fwd"]["BLOCK_T"]
        op._forward(inp["u"], inp["delta"], a2, inp["B"], inp["C"], inp["D"], None, store_states, block_t,
                    config=cfg, launch=launch)

    _compile_parallel(configs, one)


def sweep_fwd(inp, mem_floor, exp_floor, log, n_train=4):
    """Time every forward candidate without autograd and check its y and final state against the
    seq kernel's (BLOCK_T 4); time the n_train fastest and that seq kernel as the training forward
    too. Keeps the fastest in op.CONFIG; prints one table."""
    import time

    import kernels.selective_scan.op as op
    from kernels.selective_scan.op import selective_scan

    b, t, c = inp["u"].shape
    base = {k: dict(v) for k, v in op.CONFIG.items()}
    rows = []
    for layout, entry, launch in FWD_CANDIDATES:
        ch_prog = 32 // launch["NG"] * launch["num_warps"] if layout == "split" else launch["BLOCK_C"]
        rows.append({"layout": layout, "NG": launch.get("NG", "-"), "BLOCK_T": launch["BLOCK_T"],
                     "num_warps": launch["num_warps"], "pairs": launch.get("pairs", "-"),
                     "bc_fp32": launch.get("bc_fp32", "-"), "ch/prog": ch_prog,
                     "warps": -(-c // ch_prog) * b * launch["num_warps"],
                     "_cfg": _fwd_config(base, layout, entry, launch)})
    seq_ref = next(r for r in rows if r["layout"] == "seq" and r["BLOCK_T"] == SEQ_DEFAULT["BLOCK_T"])
    t0 = time.perf_counter()
    _precompile(inp, [r["_cfg"] for r in rows], store_states=False)
    print(f"compiled {len(rows)} forward kernels in {time.perf_counter() - t0:.0f} s", flush=True)

    def use(cfg):
        op.CONFIG.clear()
        op.CONFIG.update(cfg)

    def forward():
        with torch.no_grad():
            return selective_scan(inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"], inp["D"])

    use(seq_ref["_cfg"])
    y_ref, f_ref = forward()
    for row in rows:
        use(row["_cfg"])
        try:
            y, f = forward()
            row["y_err"], row["final_err"] = _rel(y, y_ref), _rel(f, f_ref)
            row["ok"] = "yes" if row["y_err"] <= 1e-2 and row["final_err"] <= 1e-4 else "NO"
            row["ms"] = bench(runner(inp, selective_scan, False)[0], rep_ms=100)
            row["x_mem_floor"], row["x_exp2_floor"] = row["ms"] / mem_floor, row["ms"] / exp_floor
        except Exception as e:  # noqa: BLE001 - a config that fails to compile or run is reported
            row["ok"] = f"error {type(e).__name__}: {str(e).splitlines()[0][:60] if str(e) else ''}"
        print({k: v for k, v in row.items() if k != "_cfg"}, flush=True)
    timed = sorted((r for r in rows if r.get("ms") is not None and r["ok"] == "yes"), key=lambda r: r["ms"])
    train = list({id(r): r for r in [*timed[:n_train], seq_ref]}.values())
    _precompile(inp, [r["_cfg"] for r in train], store_states=True)
    for row in train:
        use(row["_cfg"])
        fn, leaves = _train_fwd(inp, selective_scan)
        try:
            row["train_fwd_ms"] = bench(fn, rep_ms=100)
        except Exception as e:  # noqa: BLE001
            row["train_fwd_ms"] = f"error {type(e).__name__}"
    use(timed[0]["_cfg"] if timed else base)
    if timed:
        timed[0]["best"] = "*"
    for row in rows:
        log.append({"kernel": "fwd", **{k: v for k, v in row.items() if k != "_cfg"}})
    cols = ["layout", "NG", "BLOCK_T", "num_warps", "pairs", "bc_fp32", "ch/prog", "warps", "ms", "x_mem_floor",
            "x_exp2_floor", "train_fwd_ms", "y_err", "final_err", "ok", "best"]
    print(f"\nforward sweep, batch {b} x {t}, D={c}, bf16: median ms; x_*_floor = ms / floor; train_fwd_ms: the "
          "forward that also stores the states (autograd); y_err, final_err: relative L2 vs the seq kernel, "
          f"BLOCK_T {SEQ_DEFAULT['BLOCK_T']}\n" + table(rows, cols), flush=True)
    return rows


def _train_fwd(inp, fn):
    """The training forward: inputs that need gradients, so the forward stores the states."""
    leaves = {k: v.detach().requires_grad_(True) for k, v in inp.items()}

    def call():
        d = leaves
        return fn(d["u"], d["delta"], d["A"], d["B"], d["C"], d["D"])

    return call, list(leaves.values())


def _rel(a, ref) -> float:
    a, ref = a.double(), ref.double()
    return float("inf") if not torch.isfinite(a).all() else ((a - ref).norm() / ref.norm()).item()


def _sass_counts(kernel, pos, named):
    """Compile one recorded launch (kernel, positional and keyword arguments) offline for the
    H100 (sm_90a) with the JIT's specialization and count the SASS of its longest loop (the time
    loop): returns (Counter of opcodes in the loop, registers, spill-store bytes or "?")."""
    import os
    import re
    import subprocess
    import tempfile
    from collections import Counter

    import triton
    from triton.backends.compiler import GPUTarget

    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    names = {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}
    named = dict(named)
    num_warps = named.pop("num_warps")
    values = dict(zip(kernel.arg_names, pos), **named)
    sig, consts, attrs = {}, {}, {}
    for i, name in enumerate(kernel.arg_names):  # the JIT's specialization of a launch
        v = values[name] if name in values else kernel.params[i].default
        if i in kernel.constexprs or isinstance(v, bool) or v is None or (isinstance(v, int) and v == 1):
            sig[name], consts[name] = "constexpr", v
        elif isinstance(v, torch.Tensor):
            sig[name], attrs[(i,)] = "*" + names[v.dtype], [["tt.divisibility", 16]]
        else:
            sig[name] = "i32"
            if v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src_ = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=consts, attrs=attrs)
    k = triton.compile(src_, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps))
    with tempfile.TemporaryDirectory() as tmp:
        ptx, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(ptx, "w") as f:
            f.write(k.asm["ptx"])
        err = subprocess.run([os.path.join(bin_dir, "ptxas"), "-arch=sm_90a", "-v", ptx, "-o", cubin],
                             capture_output=True, text=True).stderr
        sass = subprocess.run([os.path.join(bin_dir, "cuobjdump"), "-sass", cubin], capture_output=True, text=True).stdout
    ins = [(int(m.group(1), 16), m.group(2)) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", sass)]
    loops = [(int(m.group(1), 16), a) for a, s in ins if (m := re.search(r"BRA .*?0x([0-9a-f]+)", s)) and int(m.group(1), 16) < a]
    # the time loop: the longest backward branch (a kernel without a loop: all of it)
    lo, hi = max(loops, key=lambda x: x[1] - x[0]) if loops else (0, float("inf"))
    ops = Counter(re.sub(r"^@!?U?P\w+\s+", "", s).split()[0].split(".")[0] for a, s in ins if lo <= a <= hi)
    spill = re.search(r"(\d+) bytes spill stores", err)
    return ops, int(re.search(r"Used (\d+) registers", err).group(1)), int(spill.group(1)) if spill else "?"


def _meta_inputs(b, t, c, n):
    meta = lambda *s, dt=torch.bfloat16: torch.empty(*s, dtype=dt, device="meta")  # noqa: E731
    return meta(b, t, c), meta(b, t, c), meta(b, t, n), meta(b, t, n), meta(c, n, dt=torch.float32), meta(c, dt=torch.float32)


def _recorder(calls):
    def record(kernel, grid):
        return lambda *xs, **kws: calls.append((kernel, xs, kws))
    return record


def sass_report(b, t, c, n, store_states=False):
    """Compile the seq and split candidates offline for the H100 (sm_90a, no GPU needed) at this
    shape and count the SASS of the time loop (two tiles of BLOCK_T tokens per iteration):
    instructions per token per warp and per channel-token, exp2, shuffles, bf16 -> fp32
    conversions (shift / and), loads; registers and spills from ptxas."""
    import kernels.selective_scan.op as op

    u, delta, B, C, a2, d = _meta_inputs(b, t, c, n)
    base = {k: dict(v) for k, v in op.CONFIG.items()}
    rows = []
    for layout, entry, launch in FWD_CANDIDATES:
        if layout not in ("seq", "split"):
            continue
        cfg = _fwd_config(base, layout, entry, launch)
        calls = []
        op._forward(u, delta, a2, B, C, d, None, store_states, cfg["bwd" if store_states else "fwd"]["BLOCK_T"],
                    config=cfg, launch=_recorder(calls))
        ops, regs, spills = _sass_counts(*calls[-1])
        tokens = 2 * launch["BLOCK_T"]
        ch_warp = 32 // launch["NG"] if layout == "split" else 32
        rows.append({"layout": layout, "NG": launch.get("NG", "-"), "BLOCK_T": launch["BLOCK_T"],
                     "num_warps": launch["num_warps"], "pairs": launch.get("pairs", "-"),
                     "bc_fp32": launch.get("bc_fp32", "-"),
                     "instr/token/warp": sum(ops.values()) / tokens,
                     "instr/channel-token": sum(ops.values()) / tokens / ch_warp,
                     "MUFU": ops["MUFU"] / tokens, "SHFL": ops["SHFL"] / tokens,
                     "SHF+LOP3+PRMT": (ops["SHF"] + ops["LOP3"] + ops["PRMT"]) / tokens,
                     "LDG": ops["LDG"] / tokens, "regs": regs, "spill_bytes": spills})
        print(rows[-1], flush=True)
    print(f"\nsm_90a SASS of the time loop, batch {b} x {t}, D={c}, N={n}, bf16, states stored: {store_states} "
          "(counts per token and warp; instr/channel-token = per token and warp / channels per warp)\n"
          + table(rows, list(rows[0])), flush=True)
    return rows


# --sweep-bwd / --sass-bwd candidates: CONFIG["bwd"] (layout "split" unless given)
BWD_CANDIDATES = (
    [dict(BLOCK_T=bt, NG=ng, CT=ct, num_warps=w, recompute_a=ra, prefetch=pf, rs=rs) for bt, ng, ct, w, ra, pf, rs in (
        (8, 4, 2, 1, True, True, True), (8, 4, 2, 1, True, True, False), (8, 4, 2, 1, True, False, True),
        (8, 4, 2, 1, False, True, True), (4, 4, 4, 1, True, True, True), (4, 4, 2, 1, True, True, True),
        (8, 4, 4, 1, True, False, True), (8, 8, 4, 1, True, True, True), (8, 8, 2, 1, True, True, True),
        (16, 4, 2, 1, True, False, True), (8, 4, 1, 1, True, True, True), (4, 8, 4, 1, True, True, True))]
    + [dict(layout="tile", BLOCK_T=8, BLOCK_C=16, tile_warps=2)]
)


def _bwd_config(base, cand):
    cfg = {k: dict(v) for k, v in base.items()}
    cfg["bwd"] = {**cfg["bwd"], "layout": "split", **cand}
    return cfg


def _bwd_channels(cfg):
    bw = cfg["bwd"]
    return bw["BLOCK_C"] if bw["layout"] == "tile" else 32 // bw["NG"] * bw["CT"] * bw["num_warps"]


def _precompile_bwd(inp, configs):
    """Compile the backward kernel of every config (`_compile_parallel`)."""
    import kernels.selective_scan.op as op

    u = inp["u"]
    b, t, c = u.shape
    n = inp["B"].shape[-1]
    a2 = (inp["A"].float() * op.LOG2E).contiguous()

    def one(cfg, launch):
        bt = cfg["bwd"]["BLOCK_T"]
        states = torch.zeros(b, -(-t // bt), c, n, device=u.device)
        op._backward(u, inp["delta"], a2, inp["B"], inp["C"], inp["D"], states, u, None, False, bt, config=cfg,
                     launch=launch)

    _compile_parallel(configs, one)


def sweep_bwd(inp, fwd_ms, log):
    """Time every backward candidate (`BWD_CANDIDATES`): the backward alone (the training
    forward run once, its graph kept: torch.autograd.grad with retain_graph), the training forward
    + backward, and the ratio of that to the forward without autograd (fwd_ms; goal <= 2.5); each
    candidate's gradients checked against the first round's "tile" backward. Keeps the fastest
    correct one in op.CONFIG; prints one table."""
    import time

    import kernels.selective_scan.op as op
    from kernels.selective_scan.op import selective_scan

    base = {k: dict(v) for k, v in op.CONFIG.items()}
    rows = []
    for cand in BWD_CANDIDATES:
        cfg = _bwd_config(base, cand)
        if cfg["bwd"]["BLOCK_T"] != base["bwd"]["BLOCK_T"]:  # the training forward stores states at this tile
            cfg["fwd_split_train"] = dict(cfg["fwd_split_train"], BLOCK_T=min(cfg["fwd_split_train"]["BLOCK_T"],
                                                                              cfg["bwd"]["BLOCK_T"]))
        rows.append({"layout": cfg["bwd"]["layout"], **{k: cfg["bwd"].get(k, "-") for k in
                                                       ("BLOCK_T", "NG", "CT", "num_warps", "recompute_a", "prefetch",
                                                        "rs")},
                     "ch/prog": _bwd_channels(cfg), "_cfg": cfg})
    t0 = time.perf_counter()
    _precompile_bwd(inp, [r["_cfg"] for r in rows])
    print(f"compiled {len(rows)} backward kernels in {time.perf_counter() - t0:.0f} s", flush=True)
    leaves = {k: v.detach().requires_grad_(True) for k, v in inp.items()}
    dy = torch.randn_like(inp["u"])

    def use(cfg):
        op.CONFIG.clear()
        op.CONFIG.update(cfg)

    def grads():
        y, _ = selective_scan(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves["D"])
        return torch.autograd.grad(y, list(leaves.values()), dy)

    ref_row = next(r for r in rows if r["layout"] == "tile")
    use(ref_row["_cfg"])
    ref = grads()
    for row in rows:
        use(row["_cfg"])
        try:
            g = grads()
            row["max_grad_err"] = max(_rel(a, r) for a, r in zip(g, ref))
            row["ok"] = "yes" if row["max_grad_err"] <= 1e-2 else "NO"
            y, _ = selective_scan(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves["D"])
            row["bwd_ms"] = bench(lambda y=y: torch.autograd.grad(y, list(leaves.values()), dy, retain_graph=True),
                                  rep_ms=100)
            fn, lv = runner(inp, selective_scan, True)
            row["fwdbwd_ms"] = bench(fn, rep_ms=100, grad_to_none=lv)
            row["fwdbwd/fwd"] = row["fwdbwd_ms"] / fwd_ms
        except Exception as e:  # noqa: BLE001 - a config that fails to compile or run is reported
            row["ok"] = f"error {type(e).__name__}: {str(e).splitlines()[0][:60] if str(e) else ''}"
        print({k: v for k, v in row.items() if k != "_cfg"}, flush=True)
    timed = sorted((r for r in rows if r.get("bwd_ms") is not None and r["ok"] == "yes"), key=lambda r: r["fwdbwd_ms"])
    use(timed[0]["_cfg"] if timed else base)
    if timed:
        timed[0]["best"] = "*"
    for row in rows:
        log.append({"kernel": "bwd", **{k: v for k, v in row.items() if k != "_cfg"}})
    cols = ["layout", "BLOCK_T", "NG", "CT", "num_warps", "recompute_a", "prefetch", "rs", "ch/prog", "bwd_ms", "fwdbwd_ms",
            "fwdbwd/fwd", "max_grad_err", "ok", "best"]
    b, t, c = inp["u"].shape
    print(f"\nbackward sweep, batch {b} x {t}, D={c}, bf16: median ms; fwdbwd/fwd: the training forward + backward "
          f"over the forward without autograd ({fwd_ms:.3f} ms; goal <= 2.5); max_grad_err: the largest relative L2 "
          "error of the six gradients against the tile backward\n" + table(rows, cols), flush=True)
    return rows


def sass_bwd_report(b, t, c, n):
    """The backward candidates compiled offline (sm_90a): registers, spills, and per token and
    warp of their time loop the instructions, exp2 (MUFU), shuffles and loads; per channel-token
    the instructions (the loop's counts / tokens per iteration / channels per warp)."""
    import kernels.selective_scan.op as op

    u, delta, B, C, a2, d = _meta_inputs(b, t, c, n)
    base = {k: dict(v) for k, v in op.CONFIG.items()}
    rows = []
    for cand in BWD_CANDIDATES:
        cfg = _bwd_config(base, cand)
        bt = cfg["bwd"]["BLOCK_T"]
        states = torch.empty(b, -(-t // bt), c, n, device="meta")
        calls = []
        op._backward(u, delta, a2, B, C, d, states, u, None, False, bt, config=cfg, launch=_recorder(calls))
        try:
            ops, regs, spills = _sass_counts(*calls[-1])
        except Exception as e:  # noqa: BLE001 - reported in the table
            rows.append({**cand, "error": f"{type(e).__name__}: {str(e)[:80]}"})
            continue
        ch = _bwd_channels(cfg)
        warps = cfg["bwd"]["tile_warps"] if cfg["bwd"]["layout"] == "tile" else cfg["bwd"]["num_warps"]
        tokens = bt  # one tile per iteration of the time loop
        rows.append({"layout": cfg["bwd"]["layout"], **{k: cfg["bwd"].get(k, "-") for k in
                                                          ("BLOCK_T", "NG", "CT", "num_warps", "recompute_a", "prefetch",
                                                           "rs")},
                     "ch/prog": ch, "instr/channel-token": sum(ops.values()) / tokens / (ch / warps),
                     "MUFU/ch-token": ops["MUFU"] / tokens / (ch / warps), "SHFL/ch-token": ops["SHFL"] / tokens / (ch / warps),
                     "LDG+STG/ch-token": (ops["LDG"] + ops["STG"]) / tokens / (ch / warps),
                     "regs": regs, "spill_bytes": spills})
        print(rows[-1], flush=True)
    print(f"\nsm_90a SASS of the backward's time loop, batch {b} x {t}, D={c}, N={n}, bf16 (per channel-token: "
          "the loop's counts / BLOCK_T / channels per warp)\n" + table(rows, list(rows[0])), flush=True)
    return rows


def official(inp, folder, log):
    """Ours beside mamba_ssm's CUDA kernels on identical inputs (their layout made once, outside
    the timing): forward without autograd, forward + backward, and (forward + backward) / forward
    for each, as wall time per call (`bench`, CUDA events) and as the kernels' own time
    (`kernel_ms`, what a graph-captured step pays). Two cases: delta given (the benchmark's
    inputs), and Mamba's time step softplus(dt + bias) inside the scan (dt = the pre-activation,
    bias (channels,) fp32). Every output and gradient of theirs is checked against ours (relative
    L2 error; the two differ in summation order and bf16 rounding of the outputs only)."""
    from benchmarks.official_selective_scan import OfficialSelectiveScan
    from kernels.selective_scan.op import selective_scan

    lib = OfficialSelectiveScan(folder)
    gen = torch.Generator(device="cuda").manual_seed(1)
    b, t, c = inp["u"].shape
    dt = (torch.randn(b, t, c, device="cuda", generator=gen) - 2.0).to(inp["u"].dtype)
    bias = torch.randn(c, device="cuda", generator=gen) * 0.5
    dy = torch.randn(b, t, c, device="cuda", generator=gen).to(inp["u"].dtype)
    rows, checks = [], []
    names = ("du", "ddelta", "dA", "dB", "dC", "dD", "dbias")
    for case, delta, dbias, softplus in (("delta given", inp["delta"], None, False),
                                         ("softplus(dt + bias)", dt, bias, True)):
        args = dict(u=inp["u"], delta=delta, A=inp["A"], B=inp["B"], C=inp["C"], D=inp["D"])
        o = lib.layout(**args, delta_bias=dbias)
        dy_o = dy.transpose(1, 2).contiguous()
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in args.items()}
        bias_leaf = None if dbias is None else dbias.detach().clone().requires_grad_(True)
        grads_of = [*leaves.values()] + ([bias_leaf] if bias_leaf is not None else [])

        def ours(grad, leaves=leaves, bias_leaf=bias_leaf, softplus=softplus):
            with torch.set_grad_enabled(grad):
                y, _ = selective_scan(**leaves, delta_bias=bias_leaf, delta_softplus=softplus)
            if grad:
                y.backward(dy)
            return y

        def theirs(grad, o=o, softplus=softplus, dy_o=dy_o):
            y, x = lib.forward(o, softplus)
            return (y, lib.backward(o, x, dy_o, softplus)) if grad else (y, None)

        y_ours = ours(True)
        g_ours = [leaves[k].grad for k in ("u", "delta", "A", "B", "C", "D")] + [None if bias_leaf is None else bias_leaf.grad]
        y_theirs, g_theirs = theirs(True)
        g_theirs = lib.ours_layout(g_theirs)
        check = {"case": case, "y": _rel(y_theirs.transpose(1, 2), y_ours)}
        for name, a, ref in zip(names, g_theirs, g_ours):
            if ref is not None:
                check[name] = _rel(a, ref)
        checks.append(check)
        print("official vs ours (relative L2):", check, flush=True)
        for leaf in grads_of:
            leaf.grad = None
        times = {}
        for who, fn in (("ours", ours), ("official", theirs)):
            for mode, grad in (("fwd", False), ("fwdbwd", True)):
                call = functools.partial(fn, grad)
                gn = grads_of if (who == "ours" and grad) else None
                times[who, mode] = (bench(call, grad_to_none=gn), kernel_ms(call, grad_to_none=gn))
        for timer, k in (("wall (bench)", 0), ("kernels (kernel_ms)", 1)):
            row = {"case": case, "timer": timer}
            for who in ("ours", "official"):
                fwd, fb = times[who, "fwd"][k], times[who, "fwdbwd"][k]
                row[f"{who}_fwd_ms"], row[f"{who}_fwdbwd_ms"], row[f"{who}_fwdbwd/fwd"] = fwd, fb, fb / fwd
            row["official/ours fwd"] = row["official_fwd_ms"] / row["ours_fwd_ms"]
            row["official/ours fwdbwd"] = row["official_fwdbwd_ms"] / row["ours_fwdbwd_ms"]
            rows.append(row)
            print(row, flush=True)
    cols = ["case", "timer", "ours_fwd_ms", "ours_fwdbwd_ms", "ours_fwdbwd/fwd", "official_fwd_ms",
            "official_fwdbwd_ms", "official_fwdbwd/fwd", "official/ours fwd", "official/ours fwdbwd"]
    print(f"\nours beside {lib.provenance.split(',')[0]} (median ms)\n" + table(rows, cols))
    log.append({"official": lib.provenance, "rows": rows, "checks": checks})
    return rows, checks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--channels", type=int, default=2048)
    ap.add_argument("--dstate", type=int, default=16)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sweep-fwd", action="store_true", help="every forward kernel and launch configuration")
    ap.add_argument("--sass", action="store_true", help="offline sm_90a instruction counts of the seq and split "
                    "forward candidates (no GPU needed), then exit")
    ap.add_argument("--states", action="store_true", help="with --sass: the training forward (stores states)")
    ap.add_argument("--sass-bwd", action="store_true", help="offline sm_90a counts of the backward candidates, then exit")
    ap.add_argument("--sweep-bwd", action="store_true", help="every backward candidate, timed and checked")
    ap.add_argument("--naive-repeats", type=int, default=3)
    ap.add_argument("--official", metavar="DIR", help="also time mamba_ssm's CUDA kernels beside ours "
                    "(DIR from scripts/official_ss_package.sh, e.g. .device/official_ss)")
    ap.add_argument("--official-only", action="store_true", help="with --official: skip the main table")
    args = ap.parse_args(argv)
    import kernels.selective_scan.op as op
    from kernels.selective_scan.op import selective_scan
    from kernels.selective_scan.reference import selective_scan_chunked, selective_scan_loop

    b, t, c, n = args.batch, args.seqlen, args.channels, args.dstate
    if args.sass:
        sass_report(b, t, c, n, store_states=args.states)
        return
    if args.sass_bwd:
        sass_bwd_report(b, t, c, n)
        return
    warm_gpu()
    inp = make_inputs(b, t, c, n)
    sweep_log = []
    mem_floor = b * t * (3 * c * 2 + 2 * n * 2) / PEAK_BYTES * 1e3
    exp_floor = b * t * c * n / mufu_rate() * 1e3
    if args.sweep_fwd:
        sweep_fwd(inp, mem_floor, exp_floor, sweep_log)
    if args.sweep_bwd:
        fn, _ = runner(inp, selective_scan, False)
        sweep_bwd(inp, bench(fn, rep_ms=100), sweep_log)
    if args.sweep:
        print("best launch configuration:", sweep(inp, sweep_log), flush=True)
    if args.official:
        official(inp, args.official, sweep_log)
        if args.official_only:
            save("selective_scan", {"env": environment(), "config": op.CONFIG, "rows": [], "sweep": sweep_log})
            return
    rows = []
    for mode, grad in (("fwd", False), ("fwdbwd", True)):
        fn, leaves = runner(inp, selective_scan, grad)
        row = {"pass": mode, "ours_ms": bench(fn, grad_to_none=leaves if grad else None)}
        fn, leaves = runner(inp, selective_scan_chunked, grad)
        row["chunked_ref_ms"] = bench_slow(fn, 3)
        if mode == "fwd":
            fn, _ = runner(inp, selective_scan_loop, False)
            row["naive_scan_ms"] = bench_slow(fn, args.naive_repeats)
            row["naive/ours"] = row["naive_scan_ms"] / row["ours_ms"]
            row["memory_floor_ms"] = mem_floor
            row["ours/mem_floor"] = row["ours_ms"] / mem_floor
            row["exp2_floor_ms"] = exp_floor
        row["chunked/ours"] = row["chunked_ref_ms"] / row["ours_ms"]
        rows.append(row)
        print(row, flush=True)
    cols = ["pass", "ours_ms", "naive_scan_ms", "naive/ours", "chunked_ref_ms", "chunked/ours", "memory_floor_ms",
            "ours/mem_floor", "exp2_floor_ms"]
    print(f"\nselective scan, batch {b} x {t}, D={c}, N={n}, bf16 (median ms)\n" + table(rows, cols))
    save("selective_scan", {"env": environment(), "config": op.CONFIG, "rows": rows, "sweep": sweep_log})


if __name__ == "__main__":
    main()

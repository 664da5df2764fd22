"""Benchmark of the Triton selective scan (S6) at Mamba-370M's shape (issue 4, acceptance 2).

    python -m benchmarks.selective_scan [--sweep]

batch 8 x 2048 tokens, D = 2048 channels (expand 2 x width 1024), N = 16 states, bf16 u/delta/B/C,
fp32 A/D. Times (median ms) ours forward (no autograd) and forward+backward against a naive
PyTorch scan (`reference.selective_scan_loop`: one step per token, fp32) and the chunked
reference; prints the memory-traffic floor (u, delta, B, C read once, y written once) and the
special-function floor (one exp2 per (token, channel, state) at 16 / clock / SM).
Goals: >= 50x the naive scan; forward within 4x of the memory floor.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import (
    PEAK_BYTES,
    bench,
    bench_slow,
    environment,
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--channels", type=int, default=2048)
    ap.add_argument("--dstate", type=int, default=16)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--naive-repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import kernels.selective_scan.op as op
    from kernels.selective_scan.op import selective_scan
    from kernels.selective_scan.reference import selective_scan_chunked, selective_scan_loop

    b, t, c, n = args.batch, args.seqlen, args.channels, args.dstate
    warm_gpu()
    inp = make_inputs(b, t, c, n)
    sweep_log = []
    if args.sweep:
        print("best launch configuration:", sweep(inp, sweep_log), flush=True)
    mem_floor = b * t * (3 * c * 2 + 2 * n * 2) / PEAK_BYTES * 1e3
    exp_floor = b * t * c * n / mufu_rate() * 1e3
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

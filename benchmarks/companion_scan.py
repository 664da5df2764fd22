"""Benchmark of Sparse Mamba's scan: the Triton op (kernels/companion_scan/op.py) vs the chunked
plain-PyTorch eigenbasis scan (`companion_scan_chunked`, what ran on CUDA before the kernels),
both in smamba's default compute dtype (float64), forward alone and forward + backward, with a
correctness check of ours against the reference on the same inputs, and a launch-parameter
sweep of the kernels (CONFIG of op.py).

    python -m benchmarks.companion_scan [--sweep]

Shapes: one smamba layer's scan, N = 16: the one-GPU study (config/gpu.yaml: batch 8 x 1024
tokens, d_inner 1024) and width 1024 at batch 8 x 2048 (the record's throughput shape).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import PEAK_BYTES, bench, environment, save, table, warm_gpu

SHAPES = {"study": (8, 1024, 1024, 16), "width1024": (8, 2048, 2048, 16)}  # batch, seqlen, d_inner, N
SWEEP = [(8, 4, 4), (8, 8, 4), (8, 2, 2), (4, 4, 2), (4, 8, 4), (16, 4, 4), (16, 2, 4), (8, 16, 8)]


def _inputs(b, t, c, n, dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    u = r(b, t, c).to(dtype)
    delta = F.softplus(r(b, t, c) - 2.0)
    X = r(b, t, n)
    alpha, beta = F.softplus(r(c, n // 2) * 0.5 + 0.5).double(), F.softplus(r(c, n // 2) * 0.5 + 0.5).double()
    return u, delta, X, r(c), alpha, beta


def _time(scan, u, delta, X, D, alpha, beta, roots, form, dy):
    def fwd():
        with torch.no_grad():
            scan(u, delta, roots(alpha, beta), X, D, form)

    leaves = [v.detach().requires_grad_() for v in (u, delta, X, D, alpha, beta)]

    def fwdbwd():
        uu, dd, XX, DD, aa, bb = leaves
        y, _ = scan(uu, dd, roots(aa, bb), XX, DD, form)
        y.backward(dy)

    torch.cuda.reset_peak_memory_stats()
    ms_f = bench(fwd)
    ms_fb = bench(fwdbwd, grad_to_none=leaves)
    return ms_f, ms_fb, torch.cuda.max_memory_allocated() / 2**30


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", action="store_true", help="time the CONFIG candidates of op.py (SWEEP)")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = ap.parse_args(argv)
    from kernels.companion_scan import companion_scan_chunked
    from kernels.companion_scan import op as cop
    from kernels.companion_scan import quadratic_roots as roots

    warm_gpu()
    rows, sweep_rows = [], []
    for name in args.shapes:
        b, t, c, n = SHAPES[name]
        for form in ("controllable", "observable"):
            u, delta, X, D, alpha, beta = _inputs(b, t, c, n, torch.float64)
            dy = torch.randn(b, t, c, device="cuda", dtype=torch.float64)
            lam = roots(alpha, beta)
            with torch.no_grad():
                y_ours, _ = cop.companion_scan(u, delta, lam, X, D, form)
                y_ref, _ = companion_scan_chunked(u, delta, lam, X, D, form)
            err = ((y_ours - y_ref).norm() / y_ref.norm()).item()
            # memory floor of the forward: u, delta, y once, P (re, im) written by the GEMMs and read
            bytes_fwd = b * t * c * (8 + 4 + 8 + 2 * 2 * 8 * n)
            row = {"shape": name, "form": form[:3], "err_vs_ref": err, "floor_fwd_ms": bytes_fwd / PEAK_BYTES * 1e3}
            for v, scan in (("ours", cop.companion_scan), ("torch", companion_scan_chunked)):
                try:
                    row[f"{v}_fwd_ms"], row[f"{v}_fwdbwd_ms"], row[f"{v}_peak_gib"] = _time(
                        scan, u, delta, X, D, alpha, beta, roots, form, dy)
                except torch.OutOfMemoryError:
                    row[f"{v}_fwd_ms"] = "OOM"
                torch.cuda.empty_cache()
            if isinstance(row.get("torch_fwd_ms"), float):
                row["speedup_fwd"] = row["torch_fwd_ms"] / row["ours_fwd_ms"]
                row["speedup_fwdbwd"] = row["torch_fwdbwd_ms"] / row["ours_fwdbwd_ms"]
            row["fwdbwd_over_fwd"] = row["ours_fwdbwd_ms"] / row["ours_fwd_ms"]
            rows.append(row)
            print(row, flush=True)
            if args.sweep and form == "controllable":
                saved = {k: dict(v) for k, v in cop.CONFIG.items()}
                for (bt, bc, nw) in SWEEP:
                    for kern in ("fwd", "bwd"):
                        cop.CONFIG[kern].update(BLOCK_T=bt, BLOCK_C=bc, num_warps=nw)
                    try:
                        f, fb, mem = _time(cop.companion_scan, u, delta, X, D, alpha, beta, roots, form, dy)
                        sweep_rows.append({"shape": name, "BLOCK_T": bt, "BLOCK_C": bc, "num_warps": nw,
                                           "fwd_ms": f, "fwdbwd_ms": fb, "bwd_ms": fb - f})
                    except Exception as e:  # noqa: BLE001 -- a candidate that fails to compile is reported
                        sweep_rows.append({"shape": name, "BLOCK_T": bt, "BLOCK_C": bc, "num_warps": nw,
                                           "fwd_ms": f"{type(e).__name__}"})
                    print(sweep_rows[-1], flush=True)
                for k, v in saved.items():
                    cop.CONFIG[k].clear()
                    cop.CONFIG[k].update(v)
            del u, delta, X, dy
            torch.cuda.empty_cache()
    cols = ["shape", "form", "err_vs_ref", "ours_fwd_ms", "torch_fwd_ms", "speedup_fwd", "ours_fwdbwd_ms",
            "torch_fwdbwd_ms", "speedup_fwdbwd", "fwdbwd_over_fwd", "floor_fwd_ms", "ours_peak_gib", "torch_peak_gib"]
    print(table(rows, cols))
    if sweep_rows:
        print(table(sweep_rows, ["shape", "BLOCK_T", "BLOCK_C", "num_warps", "fwd_ms", "bwd_ms", "fwdbwd_ms"]))
    save("companion_scan", {"env": environment(), "config": {k: dict(v) for k, v in cop.CONFIG.items()},
                            "rows": rows, "sweep": sweep_rows})


if __name__ == "__main__":
    main()

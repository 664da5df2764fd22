"""Benchmark of the Triton SSD scan at the paper's layer shape (issue 4, acceptance 2).

    python -m benchmarks.ssd [--heads 16 32] [--sweep] [--official DIR] [--no-reference]

batch 8 x 2048 tokens, headdim P=64, dstate N=128, ngroups G=1, bf16 activations, fp32 A/D/dt.
Times (median ms, warm-up excluded) ours: forward (no autograd) and forward+backward, and the
fused HADES entry (Δ gathered from M = 2H filter channels). Beside ours as ratios: the plain-torch
chunked reference and the official Mamba2 SSD Triton kernels (mamba_ssm's
`mamba_chunk_scan_combined`), the latter measured here on the same inputs when their source is
found (`--official DIR`, default .device/official, built by scripts/official_ssd_package.sh; the
machines here have no mamba_ssm) at each `--official-chunks` size (64 = ours, 256 = Mamba2's
default; the fastest is `official_ms`), after a check that they compute our function (relative L2
differences of y, the final state and every gradient). `official_h100_ms` keeps the H100
figures of docs/design.md "GPU reference numbers". Then the compute and memory floors.
`--sweep` times each kernel's launch configurations (coordinate-wise) and keeps the best.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch
import torch.nn.functional as F

from benchmarks.common import PEAK_BF16_FLOPS, PEAK_BYTES, bench, environment, save, table, warm_gpu

# mamba_ssm's Triton SSD kernels on the lent H100, bf16, batch 8 x 2048 (docs/design.md "GPU reference numbers"); history only
OFFICIAL_H100_MS = {16: {"fwd": 0.42, "fwdbwd": 4.6}, 32: {"fwd": 0.84, "fwdbwd": 3.9}}
GOALS_MS = {16: {"fwd": 0.25, "fwdbwd": 1.5}, 32: {"fwd": 0.5, "fwdbwd": 2.0}}
DEFAULT_OFFICIAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".device", "official")


def floors(b, t, h, p, n, g, L=64, elt=2):
    """(fwd_flop, fwdbwd_flop, fwd_bytes, fwdbwd_bytes): the matrix products of the chunked
    algorithm (per chunk and head: C.B shared per group 2L^2N, intra 2L^2P, entering state 2LNP,
    leaving state 2LPN; the backward ~3x the forward's products) and each tensor moved once."""
    chunks = b * t // L
    fwd = chunks * (g * 2 * L * L * n + h * (2 * L * L * p + 4 * L * n * p))
    io = b * t * (h * p * elt * 2 + g * n * elt * 2 + h * 4)  # x, y, B, C, dt
    bwd_io = b * t * (h * p * elt * 3 + g * n * (elt * 2 + 8) + h * 8)  # x, dy, dx, B, C, dB, dC, dt, ddt
    return fwd, 4 * fwd, io, io + bwd_io


def make_inputs(b, t, h, p, n, g, dtype=torch.bfloat16, routed_m=None, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    inp = dict(x=r(b, t, h, p).to(dtype), B=r(b, t, g, n).to(dtype), C=r(b, t, g, n).to(dtype),
               A=-torch.exp(r(h) * 0.5), D=r(h), dt=F.softplus(r(b, t, h) - 2.0))
    inp["dy"] = torch.randn(b, t, h, p, device="cuda", generator=torch.Generator(device="cuda").manual_seed(seed + 1)).to(dtype)
    if routed_m:
        inp["dt_raw"] = r(b, t, routed_m) - 2.0
        inp["slot_ids"] = torch.argsort(torch.rand(b, t, routed_m, device="cuda", generator=gen), -1)[..., :h].contiguous()
        inp["slot_bias"] = 0.3 * r(b, t, h)
        inp["dt_bias"] = 0.5 * r(1)
    return inp


def load_official(path):
    """(mamba_chunk_scan_combined, description) from the mamba_ssm source under `path`, or
    (None, why not). `path` goes first on sys.path, so its copy wins over an installed one."""
    if not path:
        return None, "not asked for (--no-official)"
    if not os.path.isdir(os.path.join(path, "mamba_ssm")):
        return None, f"no mamba_ssm/ under {path} (bash scripts/official_ssd_package.sh builds it)"
    path = os.path.abspath(path)
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        import mamba_ssm
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as e:  # noqa: BLE001 - reported, the benchmark goes on without it
        return None, f"import failed: {type(e).__name__}: {e}"
    version = getattr(mamba_ssm, "__version__", None)
    prov = os.path.join(path, "PROVENANCE.txt")
    if version is None and os.path.isfile(prov):
        with open(prov) as f:
            version = f.readline().split(" (")[0].strip()
    return mamba_chunk_scan_combined, f"{version or 'mamba_ssm (version unknown)'} from {os.path.dirname(mamba_ssm.__file__)}"


def runner(inp, kind, grad, official=None, chunk_size=64):
    """A closure running one forward (and backward) of `kind` in {ours, routed, reference,
    official}; `official` is mamba_chunk_scan_combined, called at `chunk_size` on ours' inputs.
    Returns (closure, leaves, call): call() gives (y, final_state) with autograd as `grad` says."""
    from kernels.ssd.op import ssd_scan, ssd_scan_routed
    from kernels.ssd.reference import ssd_chunked

    keys = ["x", "B", "C", "A", "D"] + (["dt_raw", "slot_bias", "dt_bias"] if kind == "routed" else ["dt"])
    leaves = {k: inp[k].detach().requires_grad_(grad) for k in keys}
    dy = inp["dy"] if grad else None

    def call():
        d = leaves
        if kind == "routed":
            return ssd_scan_routed(d["x"], d["dt_raw"], d["A"], d["B"], d["C"], d["D"], dt_bias=d["dt_bias"],
                                   slot_ids=inp["slot_ids"], slot_bias=d["slot_bias"])
        if kind == "official":
            # ours' dt is Δ itself (after softplus, no bias): the official's dt_softplus=False and
            # dt_bias=None read it as is; its dt_limit (0, inf) clamp is the identity on Δ > 0
            return official(d["x"], d["dt"], d["A"], d["B"], d["C"], chunk_size, D=d["D"], dt_bias=None,
                            dt_softplus=False, return_final_states=True)
        fn = ssd_scan if kind == "ours" else ssd_chunked
        return fn(d["x"], d["dt"], d["A"], d["B"], d["C"], d["D"])

    def fwd():
        with torch.no_grad():
            call()

    def fwdbwd():
        y, _ = call()
        y.backward(dy)

    return (fwdbwd if grad else fwd), list(leaves.values()), call


def time_case(inp, kind, grad, rep_ms=200, **kw):
    fn, leaves, _ = runner(inp, kind, grad, **kw)
    return bench(fn, rep_ms=rep_ms, grad_to_none=leaves if grad else None)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def outputs(inp, kind, **kw):
    """{y, final, dx, ddt, dA, dB, dC, dD} of one forward+backward (dy = inp["dy"])."""
    _, leaves, call = runner(inp, kind, True, **kw)
    y, final = call()
    grads = torch.autograd.grad(y, leaves, inp["dy"])
    names = ["dx", "dB", "dC", "dA", "dD", "ddt"]  # runner's leaf order: x, B, C, A, D, dt
    out = {"y": y.detach(), "final": final.detach(), **dict(zip(names, grads))}
    assert list(out) == CHECKED, list(out)
    return out


CHECKED = ["y", "final", "dx", "dB", "dC", "dA", "dD", "ddt"]  # compared official vs ours


def check_official(inp, official, chunk_size, ours=None):
    """Relative L2 differences official vs ours for y, the final state and every gradient, and
    of each one's y from the fp32 chunked reference (ours' oracle)."""
    from kernels.ssd.reference import ssd_chunked

    ours = ours or outputs(inp, "ours")
    off = outputs(inp, "official", official=official, chunk_size=chunk_size)
    err = {k: _rel(off[k], ours[k]) for k in ours}
    with torch.no_grad():
        y32, _ = ssd_chunked(*(inp[k].float() for k in ("x", "dt", "A", "B", "C", "D")))
    err["y_ours_vs_fp32"] = _rel(ours["y"], y32)
    err["y_official_vs_fp32"] = _rel(off["y"], y32)
    return err


def sweep(inp, log):
    """Coordinate-wise search over the launch configurations; leaves the best in op.CONFIG."""
    import kernels.ssd.op as op

    blocks = [dict(BLOCK_P=bp, num_warps=w, num_stages=2) for bp, w in itertools.product((64, 32), (4, 8))]
    space = {"fwd": blocks, "states": blocks, "dstate": blocks, "chunk": [dict(num_warps=w, num_stages=1) for w in (4, 8)]}
    for name, cands in space.items():
        grad = name != "fwd"
        best = None
        for cfg in cands:
            op.CONFIG[name] = cfg
            try:
                ms = time_case(inp, "ours", grad, rep_ms=100)
            except Exception as e:  # noqa: BLE001 - a config that does not compile is skipped
                log.append({"kernel": name, **cfg, "ms": f"error {type(e).__name__}"})
                continue
            log.append({"kernel": name, **cfg, "ms": ms})
            print(f"  sweep {name} {cfg}: {ms:.3f} ms", flush=True)
            if best is None or ms < best[0]:
                best = (ms, cfg)
        op.CONFIG[name] = best[1]
    return dict(op.CONFIG)


def chunk_warps(op, inputs, warps, rounds):
    """Forward + backward ms (plain and HADES's routed entry) with CONFIG["chunk"]["num_warps"] at
    each of `warps`, the variants interleaved round by round (a slow process or GPU state then
    affects every variant alike); prints each variant's median over the rounds and its ratio to
    the first. Compiles every variant before the first round."""
    import statistics

    keep = dict(op.CONFIG["chunk"])
    times = {(i, kind, w): [] for i in range(len(inputs)) for kind in ("ours", "routed") for w in warps}
    try:
        for r in range(rounds + 1):  # round 0: compile and warm up, not counted
            for (i, kind, w), ts in times.items():
                op.CONFIG["chunk"] = dict(keep, num_warps=w, num_warps_many=w)
                ms = time_case(inputs[i], kind, True, rep_ms=100)
                if r:
                    ts.append(ms)
    finally:
        op.CONFIG["chunk"] = keep
    rows = []
    for (i, kind, w), ts in times.items():
        h = inputs[i]["x"].shape[2]
        first = statistics.median(times[(i, kind, warps[0])])
        rows.append({"H": h, "entry": "plain" if kind == "ours" else "routed", "num_warps": w,
                     "fwdbwd_ms": statistics.median(ts), "min-max": f"{min(ts):.3f}-{max(ts):.3f}",
                     f"vs {warps[0]} warps": statistics.median(ts) / first})
    print(f"\nSSD forward + backward by the gradient kernel's num_warps (median of {rounds} interleaved rounds)\n"
          + table(rows, list(rows[0])), flush=True)
    save("ssd_chunk_warps", {"env": environment(), "config": op.CONFIG, "rows": rows})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--headdim", type=int, default=64)
    ap.add_argument("--dstate", type=int, default=128)
    ap.add_argument("--groups", type=int, default=1)
    ap.add_argument("--sweep", action="store_true", help="tune the launch configurations first (at the first --heads)")
    ap.add_argument("--no-reference", action="store_true", help="skip the plain-torch reference timings")
    ap.add_argument("--official", metavar="DIR", default=DEFAULT_OFFICIAL if os.path.isdir(DEFAULT_OFFICIAL) else None,
                    help="folder holding mamba_ssm's SSD Triton source (scripts/official_ssd_package.sh) to time "
                         "beside ours; default .device/official where it exists")
    ap.add_argument("--no-official", action="store_true", help="do not time the official kernels")
    ap.add_argument("--official-chunks", type=int, nargs="+", default=[64, 256],
                    help="chunk sizes to time the official kernels at (the fastest is official_ms)")
    ap.add_argument("--chunk-warps", type=int, nargs="+", metavar="W",
                    help="only time the forward + backward (plain and routed) with the gradient kernel at each of "
                         "these num_warps, interleaved over --rounds rounds in this one process, then exit")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of --chunk-warps")
    args = ap.parse_args(argv)
    import kernels.ssd.op as op

    official, official_info = load_official(None if args.no_official else args.official)
    print(("official SSD kernels: " + official_info) if official else
          f"official SSD kernels not timed ({official_info}); official_h100_ms only", flush=True)

    b, t, p, n, g = args.batch, args.seqlen, args.headdim, args.dstate, args.groups
    warm_gpu()
    if args.chunk_warps:
        chunk_warps(op, [make_inputs(b, t, h, p, n, g, routed_m=2 * h) for h in args.heads], args.chunk_warps, args.rounds)
        return
    rows, sweep_log, checks = [], [], []
    if args.sweep:
        best = sweep(make_inputs(b, t, args.heads[0], p, n, g), sweep_log)
        print("best launch configuration:", best, flush=True)
    for h in args.heads:
        inp = make_inputs(b, t, h, p, n, g, routed_m=2 * h)
        f_fwd, f_all, by_fwd, by_all = floors(b, t, h, p, n, g)
        chunks_ok = {}  # official chunk size -> its check (sizes whose check failed are left out)
        if official:
            ours_out = outputs(inp, "ours")
            for cs in args.official_chunks:
                try:
                    err = check_official(inp, official, cs, ours_out)
                except Exception as e:  # noqa: BLE001 - reported, the benchmark goes on without it
                    print(f"  official chunk {cs}, H={h}: failed ({type(e).__name__}: {e})", flush=True)
                    checks.append({"H": h, "chunk": cs, "error": f"{type(e).__name__}: {e}"})
                    continue
                chunks_ok[cs] = err
                checks.append({"H": h, "chunk": cs, **err})
                print(f"  official chunk {cs}, H={h} vs ours (rel L2): " + ", ".join(f"{k} {v:.2e}" for k, v in err.items()), flush=True)
            del ours_out
        for mode, grad in (("fwd", False), ("fwdbwd", True)):
            row = {"H": h, "pass": mode}
            row["ours_ms"] = time_case(inp, "ours", grad)
            row["hades_routed_ms"] = time_case(inp, "routed", grad)
            if not args.no_reference:
                row["torch_ref_ms"] = time_case(inp, "reference", grad, rep_ms=100)
                row["ref/ours"] = row["torch_ref_ms"] / row["ours_ms"]
            for cs, err in chunks_ok.items():
                try:
                    row[f"official_c{cs}_ms"] = time_case(inp, "official", grad, official=official, chunk_size=cs)
                except Exception as e:  # noqa: BLE001
                    print(f"  official chunk {cs}, H={h}, {mode}: timing failed ({type(e).__name__}: {e})", flush=True)
                    continue
                keys = CHECKED[:2] if mode == "fwd" else CHECKED
                worst = max(err[k] for k in keys)
                if "official_ms" not in row or row[f"official_c{cs}_ms"] < row["official_ms"]:
                    row.update(official_ms=row[f"official_c{cs}_ms"], official_chunk=cs, official_rel_err=worst)
            if "official_ms" in row:
                row["official/ours"] = row["official_ms"] / row["ours_ms"]
            off = OFFICIAL_H100_MS.get(h, {}).get(mode)
            if off:
                row["official_h100_ms"] = off
            row["goal_ms"] = GOALS_MS.get(h, {}).get(mode, "")
            flop, byts = (f_fwd, by_fwd) if mode == "fwd" else (f_all, by_all)
            row["compute_floor_ms"] = flop / PEAK_BF16_FLOPS * 1e3
            row["memory_floor_ms"] = byts / PEAK_BYTES * 1e3
            rows.append(row)
            print(row, flush=True)
        # saved after every H, so that a run cut short by its time limit keeps what it measured
        save("ssd", {"env": environment(), "config": op.CONFIG, "official": official_info, "official_checks": checks,
                     "rows": rows, "sweep": sweep_log})
    per_chunk = [f"official_c{cs}_ms" for cs in args.official_chunks] if official else []
    cols = ["H", "pass", "ours_ms", "hades_routed_ms", "goal_ms", "official_ms", "official_chunk", "official/ours",
            "official_rel_err", *per_chunk, "official_h100_ms", "torch_ref_ms", "ref/ours", "compute_floor_ms", "memory_floor_ms"]
    print(f"\nSSD scan, batch {b} x {t}, P={p}, N={n}, G={g}, bf16 (median ms; official: {official_info})\n" + table(rows, cols))
    if official:
        print("official_rel_err: relative L2 difference official vs ours at official_chunk (fwd: worst of y and the"
              " final state; fwdbwd: worst of those and every gradient)")


if __name__ == "__main__":
    main()

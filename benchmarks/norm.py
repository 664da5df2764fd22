"""Benchmark of the fused RMS norms (kernels/norm) against the PyTorch modules they replace
(`hades.models.layers.RMSNorm` / `GatedRMSNorm` with use_kernel False: fp32 elementwise kernels),
forward and forward + backward, at the shapes a training step at width 1024 sees.

    python -m benchmarks.norm [--sweep]

Shapes: batch 8 x 2048 tokens = 16384 rows; bf16 activations with the fp32 weight (bf16
autocast): the blocks' RMSNorm over d_model = 1024; Mamba2's gated norm over d_inner = 2048 (one
group) and HADES's over d_ssm = 1024; z is a column slice of the in-projection's output (as in the
mixers), y the scan's output (contiguous). Memory floor: bytes that must move at this GPU's
measured copy rate (`copy_rate`; forward: read x (, z), write out; backward: read x (, z), dout,
write dx (, dz)). `*_ms`: wall clock between CUDA events (host launch cost included, as an
eager step sees it); `*_kern_ms`: the GPU time of the kernels alone (`kernel_ms`, what the
graph-captured training step sees), bwd = fwd+bwd less fwd.
--sweep also times other tile / warp / program counts of kernels.norm.op.CONFIG.
"""

from __future__ import annotations

import argparse
import itertools

import torch

from benchmarks.common import bench, copy_rate, environment, kernel_ms, save, table, warm_gpu

CASES = [  # name, dim, group_size (None: RMSNorm), extra in-projection columns around z
    ("rmsnorm_d1024", 1024, None, 0),
    ("gated_mamba2_d2048", 2048, 2048, 2048 + 256 + 32),
    ("gated_hades_d1024", 1024, 1024, 1024 + 256 + 32),
]


def _case(dim, gs, extra, rows, seed=0):
    from hades.models.layers import GatedRMSNorm, RMSNorm

    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(rows, dim, device="cuda", generator=g).to(torch.bfloat16)
    z = None
    if gs is not None:
        zxbc = torch.randn(rows, dim + extra, device="cuda", generator=g).to(torch.bfloat16)
        z = zxbc[:, :dim]  # the in-projection's z columns: row stride dim + extra
    mod = (RMSNorm(dim) if gs is None else GatedRMSNorm(dim, group_size=gs)).cuda()
    with torch.no_grad():
        mod.weight.mul_(1 + 0.3 * torch.randn(dim, device="cuda", generator=g))
    dout = torch.randn(rows, dim, device="cuda", generator=g).to(torch.bfloat16)
    return mod, x, z, dout


def _fns(mod, x, z, dout):
    args = (x,) if z is None else (x, z)
    leaves = [a.detach().requires_grad_() for a in args]

    def fwd():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            mod(*args)

    def fwdbwd():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = mod(*leaves)
        out.backward(dout)

    return fwd, fwdbwd, [*leaves, mod.weight]


def _err(mod, x, z, use_kernel: bool) -> float:
    """Relative L2 error of the module's bf16 output against the fp64 reference."""
    from kernels.norm.reference import gated_rms_norm_ref, rms_norm_ref

    mod.use_kernel = use_kernel
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        out = mod(x) if z is None else mod(x, z)
    w = mod.weight.detach().double()
    ref = rms_norm_ref(x.double(), w, mod.eps) if z is None else gated_rms_norm_ref(x.double(), z.double(), w, mod.eps, mod.group_size)
    return ((out.double() - ref).norm() / ref.norm()).item()


def _sweep(rows: int) -> list[dict]:
    """fwd and fwd+bwd of ours under other CONFIG choices (the forward config fixed while the
    backward ones vary)."""
    from kernels.norm import op

    base = dict(op.CONFIG)
    out = []
    for name, dim, gs, extra in CASES:
        mod, x, z, dout = _case(dim, gs, extra, rows)
        mod.use_kernel = True
        fwd, fwdbwd, grads = _fns(mod, x, z, dout)
        for tile, warps in itertools.product((2048, 4096, 8192), (4, 8)):
            op.CONFIG.update(base, FWD_TILE=tile, FWD_WARPS=warps)
            out.append({"case": name, "dir": "fwd", "tile": tile, "warps": warps, "ms": bench(fwd)})
        for tile, warps, per_sm in itertools.product((2048, 4096, 8192), (4, 8), (2, 4, 8)):
            op.CONFIG.update(base, BWD_TILE=tile, BWD_WARPS=warps, BWD_PROGRAMS_PER_SM=per_sm)
            out.append({"case": name, "dir": "fwdbwd", "tile": tile, "warps": warps, "per_sm": per_sm,
                        "ms": bench(fwdbwd, grad_to_none=grads)})
        for d in ("fwd", "fwdbwd"):
            best = min((r for r in out if r["case"] == name and r["dir"] == d), key=lambda r: r["ms"])
            print(f"sweep {name} {d}: best {best}", flush=True)
    op.CONFIG.update(base)
    return out


def _residual_add(rows: int, op) -> dict:
    """The blocks' residual add, fp32 stream + bf16 mixer output -> fp32 (16384 x 1024): the
    Triton forward of `residual_add` against torch's x + y (an unvectorised kernel for mixed
    dtypes), kernel time, and the floor (read 4 + 2, write 4 bytes per element)."""
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(rows, 1024, device="cuda", generator=g)
    y = torch.randn(rows, 1024, device="cuda", generator=g).to(torch.bfloat16)
    res = op.ResidualGrad()
    row = {"case": "residual_add fp32 + bf16", "rows": rows, "dim": 1024,
           "ours_kern_ms": kernel_ms(lambda: op.residual_add(x, y, res)), "torch_kern_ms": kernel_ms(lambda: x + y),
           "floor_ms": 10 * x.numel() / copy_rate() * 1e3, "equal": bool(torch.equal(op.residual_add(x, y, res), x + y))}
    row["ours_vs_floor"], row["torch/ours"] = row["ours_kern_ms"] / row["floor_ms"], row["torch_kern_ms"] / row["ours_kern_ms"]
    print("\nresidual add (kernel ms)\n" + table([row], list(row)), flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=8 * 2048)
    ap.add_argument("--sweep", action="store_true", help="also time other kernels.norm.op.CONFIG choices")
    args = ap.parse_args(argv)
    from kernels.norm import op

    warm_gpu()
    rows = []
    for name, dim, gs, extra in CASES:
        mod, x, z, dout = _case(dim, gs, extra, args.rows)
        n = x.numel()
        io_fwd, io_bwd = (2, 3) if z is None else (3, 5)  # bf16 tensors moved per element
        rate = copy_rate()
        row = {"case": name, "rows": args.rows, "dim": dim, "group": gs or dim,
               "floor_fwd_ms": io_fwd * 2 * n / rate * 1e3,
               "floor_bwd_ms": io_bwd * 2 * n / rate * 1e3,
               "floor_fwdbwd_ms": (io_fwd + io_bwd) * 2 * n / rate * 1e3}
        for tag, use_kernel in (("ours", True), ("torch", False)):
            mod.use_kernel = use_kernel
            row[f"{tag}_err"] = _err(mod, x, z, use_kernel)
            fwd, fwdbwd, grads = _fns(mod, x, z, dout)
            row[f"{tag}_fwd_ms"] = bench(fwd)
            row[f"{tag}_fwdbwd_ms"] = bench(fwdbwd, grad_to_none=grads)
            row[f"{tag}_fwd_kern_ms"] = kernel_ms(fwd)
            row[f"{tag}_bwd_kern_ms"] = kernel_ms(fwdbwd, grad_to_none=grads) - row[f"{tag}_fwd_kern_ms"]
        for d in ("fwd", "fwdbwd"):
            row[f"speedup_{d}"] = row[f"torch_{d}_ms"] / row[f"ours_{d}_ms"]
            row[f"ours_{d}_vs_floor"] = row[f"ours_{d}_ms"] / row[f"floor_{d}_ms"]
        for d in ("fwd", "bwd"):
            row[f"ours_{d}_kern_vs_floor"] = row[f"ours_{d}_kern_ms"] / row[f"floor_{d}_ms"]
            row[f"torch/ours_{d}_kern"] = row[f"torch_{d}_kern_ms"] / row[f"ours_{d}_kern_ms"]
        rows.append(row)
        print(row, flush=True)
    cols = ["case", "dim", "group", "ours_fwd_ms", "torch_fwd_ms", "speedup_fwd", "floor_fwd_ms", "ours_fwdbwd_ms",
            "torch_fwdbwd_ms", "speedup_fwdbwd", "floor_fwdbwd_ms", "ours_err", "torch_err"]
    print(f"\nRMS norms, {args.rows} rows, bf16 input, fp32 weight (median ms, CUDA events; floor = bytes / "
          f"{copy_rate() / 1e12:.2f} TB/s; err = rel. error vs fp64; CONFIG {op.CONFIG})\n" + table(rows, cols))
    cols = ["case", "ours_fwd_kern_ms", "floor_fwd_ms", "ours_fwd_kern_vs_floor", "ours_bwd_kern_ms", "floor_bwd_ms",
            "ours_bwd_kern_vs_floor", "torch_bwd_kern_ms", "torch/ours_bwd_kern"]
    print("\nkernel time alone (ms)\n" + table(rows, cols))
    add = _residual_add(args.rows, op)
    payload = {"env": environment(), "config": dict(op.CONFIG), "copy_rate": copy_rate(), "rows": rows,
               "residual_add": add}
    if args.sweep:
        payload["sweep"] = _sweep(args.rows)
    save("norm", payload)


if __name__ == "__main__":
    main()

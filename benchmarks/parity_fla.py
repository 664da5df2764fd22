"""GPU parity of our token mixers with fla 0.6.0's layers, same weights (issue 2, acceptance 4).

    python -m benchmarks.parity_fla

For linear_attn, retnet, deltanet, mamba and mamba2: build our mixer (width 256, fp32), map its
weights onto fla's layer (the attention mixers' `to_fla_state_dict`; for Mamba/Mamba2 only the
conv is renamed: ours wraps nn.Conv1d as `conv.conv`, fla names it `conv1d`), run both on the
same input and report ||ours - fla|| / ||fla|| for our reference path and our fast path.
fla runs its Triton kernels for the attention layers and, lacking mamba_ssm/causal-conv1d, its
naive PyTorch fallback for Mamba/Mamba2. Goal: <= 1e-3 in fp32. fla's attention kernels are
tried in fp32 first; where one refuses fp32 the row says so and runs it under bf16 autocast.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math

import torch

from benchmarks.common import environment, save, table

GOAL = 1e-3
ATTN_CLASSES = {"linear_attn": "LinearAttention", "retnet": "MultiScaleRetention", "deltanet": "DeltaNet"}


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _pair(arch, d_model=256):
    import fla.layers as fl

    from hades.config import ModelConfig
    from hades.models.mixers import build_mixer

    cfg = ModelConfig(arch=arch, d_model=d_model, num_heads=4, head_dim=64, d_state=16 if arch == "mamba" else 64,
                      chunk_size=64, n_layer=1, vocab_size=512)
    torch.manual_seed(0)
    ours = build_mixer(cfg, 0)
    for p in ours.parameters():
        if p.ndim >= 2:
            torch.nn.init.normal_(p, std=0.02)
    ours.init_weights()
    sd = ours.state_dict()
    if arch in ATTN_CLASSES:
        mod = importlib.import_module(f"hades.models.mixers.{arch}")
        theirs = getattr(fl, ATTN_CLASSES[arch])(**mod.fla_layer_kwargs(cfg))
        mapped = mod.to_fla_state_dict(sd)
    else:
        d_inner = cfg.expand * d_model
        if arch == "mamba":
            theirs = fl.Mamba(hidden_size=d_model, state_size=cfg.d_state, conv_kernel=cfg.d_conv, intermediate_size=d_inner,
                              dt_rank=cfg.dt_rank or math.ceil(d_model / 16), use_bias=False, use_conv_bias=True, backend="triton")
        else:
            theirs = fl.Mamba2(num_heads=d_inner // cfg.head_dim, head_dim=cfg.head_dim, hidden_size=d_model,
                               state_size=cfg.d_state, expand=cfg.expand, n_groups=cfg.n_groups, conv_kernel=cfg.d_conv,
                               use_conv_bias=True, use_bias=False, norm_eps=cfg.norm_eps, chunk_size=cfg.chunk_size,
                               backend="triton")
        mapped = {k.replace("conv.conv.", "conv1d."): v for k, v in sd.items()}
    theirs.load_state_dict(mapped)
    return cfg, ours, theirs


def _fla_forward(theirs, u):
    out = theirs(u)
    return out[0] if isinstance(out, tuple) else out


def main(argv=None):
    from hades.models.mixers import build_mixer

    u_shape = (2, 256, 256)
    rows = []
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["linear_attn", "retnet", "deltanet", "mamba", "mamba2"])
    args = ap.parse_args(argv)
    for arch in args.archs:
        row = {"arch": arch}
        try:
            cfg, ours, theirs = _pair(arch)
            ours, theirs = ours.cuda(), theirs.cuda()
            ref_mixer = build_mixer(dataclasses.replace(cfg, kernel="reference"), 0).cuda()
            ref_mixer.load_state_dict(ours.state_dict())
            u = torch.randn(*u_shape, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
            with torch.no_grad():
                y_ref = ref_mixer(u).y
                y_fast = ours(u).y
                try:
                    y_fla, row["fla_dtype"] = _fla_forward(theirs, u).float(), "fp32"
                except Exception as e:  # noqa: BLE001 - fla kernels that refuse fp32
                    row["fla_fp32_error"] = f"{type(e).__name__}: {str(e)[:80]}"
                    try:  # fla's recurrent kernel of the same layer, which may take fp32
                        theirs.mode = "fused_recurrent"
                        y_fla, row["fla_dtype"] = _fla_forward(theirs, u).float(), "fp32 (fla mode=fused_recurrent)"
                    except Exception:  # noqa: BLE001
                        with torch.autocast("cuda", dtype=torch.bfloat16):
                            y_fla, row["fla_dtype"] = _fla_forward(theirs, u).float(), "bf16 autocast"
            row["ours_ref_vs_fla"] = _rel(y_ref, y_fla)
            row["ours_fast_vs_fla"] = _rel(y_fast, y_fla)
            row["ours_fast_vs_ours_ref"] = _rel(y_fast, y_ref)
            row["pass"] = row["ours_ref_vs_fla"] <= GOAL if row["fla_dtype"].startswith("fp32") else "n/a (fla bf16)"
        except Exception as e:  # noqa: BLE001 - reported in the table
            row["error"] = f"{type(e).__name__}: {str(e)[:120]}"
        rows.append(row)
        print(row, flush=True)
    cols = ["arch", "fla_dtype", "ours_ref_vs_fla", "ours_fast_vs_fla", "ours_fast_vs_ours_ref", "pass", "error"]
    print(f"\nparity with fla 0.6.0 layers, input {u_shape}, fp32, ||ours - fla|| / ||fla|| (goal <= {GOAL})\n" + table(rows, cols))
    save("parity_fla", {"env": environment(), "rows": rows})


if __name__ == "__main__":
    main()

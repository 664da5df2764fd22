"""The Triton SSD scan (`kernels.ssd.op`) == the fp64 token loop, output, final state and every
gradient, in Triton's CPU interpreter (fp32; the interpreter's bf16 products are not the GPU's):
the chunk states stored by the forward for the backward (SAVE_STATES, the default) and
recomputed by the backward, a length with a padded last chunk and one shorter than a chunk, two
groups, D and an initial state or neither, NaN-poisoned outputs; and Mamba2's chain of Triton
ops with its splits through kernels/slab.py (gradients written in place) against torch.split.
The GPU suite
(tests/gpu/test_kernels.py) runs bf16 and the routed entry at the training shapes.

Skipped where Triton is not installed (CI); run directly with
`TRITON_INTERPRET=1 python tests/test_ssd_kernels.py`.
"""

from __future__ import annotations

import torch
from _interpreter import interpreter_main, needs_triton, range_shim, rel_err, run_in_interpreter

# name, (batch, seqlen, heads, headdim, groups, dstate), chunk, D and initial state
CASES = [
    ("padded_tail_2groups", (2, 37, 4, 16, 2, 16), 16, True),
    ("shorter_than_a_chunk", (1, 9, 2, 16, 1, 16), 16, False),
    ("three_chunks", (1, 48, 2, 16, 1, 32), 16, True),
]
TOL = 1e-5  # relative L2 against fp64 on the same inputs


def _checks() -> list[dict]:
    range_shim()
    import kernels._buffers
    from kernels.ssd import op
    from kernels.ssd.reference import ssd_loop

    kernels._buffers.POISON_OUTPUTS = True
    calls = []
    forward = op._forward
    op._forward = lambda *a, **k: calls.append(k.get("compute_y", True)) or forward(*a, **k)
    out = []
    for i, (name, (b, t, h, p, g, n), chunk, extras) in enumerate(CASES):
        gen = torch.Generator().manual_seed(i)
        r = lambda *s, gen=gen: torch.randn(*s, generator=gen)  # noqa: E731
        inputs = {"x": r(b, t, h, p), "dt": torch.rand(b, t, h, generator=gen) + 0.05,
                  "A": -(torch.rand(h, generator=gen) * 3.5 + 0.5), "B": r(b, t, g, n), "C": r(b, t, g, n),
                  "D": r(h) if extras else None, "initial_state": r(b, h, p, n) if extras else None}
        names = [k for k, v in inputs.items() if v is not None]
        ref = {k: v.double().requires_grad_(True) if v is not None else None for k, v in inputs.items()}
        yr, fr = ssd_loop(**ref)
        gy, gf = torch.randn(yr.shape, generator=gen, dtype=torch.float64), torch.randn(fr.shape, generator=gen, dtype=torch.float64)
        grads_r = torch.autograd.grad((yr * gy).sum() + (fr * gf).sum(), [ref[k] for k in names])
        for save in (True, False):
            op.SAVE_STATES = save
            calls.clear()
            leaves = {k: v.clone().requires_grad_(True) if v is not None else None for k, v in inputs.items()}
            y, fin = op.ssd_scan(**leaves, chunk_size=chunk)
            grads = torch.autograd.grad((y.double() * gy).sum() + (fin.double() * gf).sum(), [leaves[k] for k in names])
            tag = f"{'saved' if save else 'recomputed'} {name}"
            # saved: the forward's pass only; recomputed: and a states-only pass in the backward
            out.append({"name": f"{tag} forward passes", "err": abs(len(calls) - (1 if save else 2)), "tol": 0})
            out += [{"name": f"{tag} y", "err": rel_err(y, yr), "tol": TOL},
                    {"name": f"{tag} final_state", "err": rel_err(fin, fr), "tol": TOL}]
            out += [{"name": f"{tag} d{k}", "err": rel_err(gk, gr), "tol": TOL} for k, gk, gr in zip(names, grads, grads_r)]
    op.SAVE_STATES = True
    op._forward = forward
    return out + _slab_chain_checks()


def _slab_chain_checks() -> list[dict]:
    """Mamba2's chain on the Triton ops (in_proj output -> split z, xBC, dt -> conv -> split x,
    B, C -> SSD scan -> gated norm with z), the splits through kernels.slab (the conv, the scan
    and the norm writing their input gradients into the slabs) against torch.split: the input
    gradient and the conv's weight gradient, fp32."""
    from kernels.conv.op import causal_conv1d
    from kernels.norm.op import gated_rms_norm
    from kernels.slab import GradSlab
    from kernels.ssd.op import ssd_scan

    b, t, h, p, n = 2, 37, 2, 16, 16
    d, conv_dim = h * p, h * p + 2 * n
    gen = torch.Generator().manual_seed(7)
    zxbcdt0 = torch.randn(b, t, d + conv_dim + h, generator=gen)
    w = 0.5 * torch.randn(conv_dim, 4, generator=gen)
    A = -(torch.rand(h, generator=gen) + 0.5)
    gy = torch.randn(b, t, d, generator=gen)

    def chain(use_slab):
        zxbcdt = zxbcdt0.clone().requires_grad_(True)
        wl = w.clone().requires_grad_(True)
        slab = GradSlab(zxbcdt, [d, conv_dim, h]) if use_slab else None
        z, xBC, dt = slab.split(zxbcdt) if slab else torch.split(zxbcdt, [d, conv_dim, h], dim=-1)
        xBC = causal_conv1d(xBC, wl, None, True, dx_into=slab.part(1) if slab else None)
        slab2 = GradSlab(xBC, [d, n, n]) if slab else None
        x, B, C = slab2.split(xBC) if slab2 else torch.split(xBC, [d, n, n], dim=-1)
        into = slab2.parts() if slab2 else None
        y, _ = ssd_scan(x.reshape(b, t, h, p), torch.nn.functional.softplus(dt), A, B.reshape(b, t, 1, n),
                        C.reshape(b, t, 1, n), chunk_size=16, grad_into=into)
        out = gated_rms_norm(y.reshape(b, t, d), z, torch.ones(d), dz_into=slab.part(0) if slab else None)
        return torch.autograd.grad((out * gy).sum(), (zxbcdt, wl))

    import kernels.slab

    same, real = [], kernels.slab._same  # per piece: written in place by its op (no copy)?
    kernels.slab._same = lambda a, b: same.append(real(a, b)) or same[-1]
    ref, got = chain(False), chain(True)
    kernels.slab._same = real
    # xBC's split first (x, B, C: the scan's), then zxbcdt's (z: the norm's, xBC: the conv's; dt
    # comes through softplus: copied)
    in_place = {"name": "slab chain pieces written in place", "err": float(same != [True] * 5 + [False]), "tol": 0}
    return [in_place] + [{"name": f"slab chain d{k}", "err": rel_err(g, r), "tol": 1e-6}
                         for k, g, r in zip(("zxbcdt", "w"), got, ref)]


@needs_triton
def test_ssd_in_interpreter():
    results = run_in_interpreter(__file__)
    assert len(results) == 2 * sum(3 + 5 + 2 * extras for *_, extras in CASES) + 3


if __name__ == "__main__":
    interpreter_main(_checks)

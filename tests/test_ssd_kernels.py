"""The Triton SSD scan (`kernels.ssd.op`) == the fp64 token loop, output, final state and every
gradient, in Triton's CPU interpreter (fp32; the interpreter's bf16 products are not the GPU's):
the chunk states stored by the forward for the backward (SAVE_STATES, the default) and
recomputed by the backward, a length with a padded last chunk and one shorter than a chunk, two
groups, D and an initial state or neither, NaN-poisoned outputs. The GPU suite
(tests/gpu/test_kernels.py) runs bf16 and the routed entry at the training shapes.

Skipped where Triton is not installed (CI); run directly with
`TRITON_INTERPRET=1 python tests/test_ssd_kernels.py`.
"""

from __future__ import annotations

import torch
from _interpreter import interpreter_main, needs_triton, range_shim, run_in_interpreter

# name, (batch, seqlen, heads, headdim, groups, dstate), chunk, D and initial state
CASES = [
    ("padded_tail_2groups", (2, 37, 4, 16, 2, 16), 16, True),
    ("shorter_than_a_chunk", (1, 9, 2, 16, 1, 16), 16, False),
    ("three_chunks", (1, 48, 2, 16, 1, 32), 16, True),
]
TOL = 1e-5  # relative L2 against fp64 on the same inputs


def _rel(a, ref) -> float:
    a, ref = a.detach().double(), ref.detach().double()
    return float("inf") if not torch.isfinite(a).all() else ((a - ref).norm() / ref.norm()).item()


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
            out += [{"name": f"{tag} y", "err": _rel(y, yr), "tol": TOL},
                    {"name": f"{tag} final_state", "err": _rel(fin, fr), "tol": TOL}]
            out += [{"name": f"{tag} d{k}", "err": _rel(gk, gr), "tol": TOL} for k, gk, gr in zip(names, grads, grads_r)]
    op.SAVE_STATES = True
    return out


@needs_triton
def test_ssd_in_interpreter():
    results = run_in_interpreter(__file__)
    assert len(results) == 2 * sum(3 + 5 + 2 * extras for *_, extras in CASES)


if __name__ == "__main__":
    interpreter_main(_checks)

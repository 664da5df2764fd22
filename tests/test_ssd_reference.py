"""Chain of trust, first link: the SSD token loop (the equation) == the chunked SSD algorithm.

fp64, tight tolerance, outputs, final states and every gradient (x, dt, A, B, C, D, initial
state), odd lengths and lengths that are not a multiple of the chunk. Also: the `kernels`
package name resolves to this repository and does not make transformers think Hugging Face's
`kernels` package is installed.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from kernels.ssd import ssd_chunked, ssd_loop, ssd_scan

REPO = Path(__file__).resolve().parents[1]
TOL = dict(rtol=1e-9, atol=1e-10)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)



def make_inputs(b=2, t=63, h=4, p=8, g=2, n=5, dtype=torch.float64, seed=0, init_state=True, with_D=True):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    inputs = {
        "x": rnd(b, t, h, p),
        # time steps in (0.05, 1.05) and A in (-4, -0.5): per-token decays from ~0.015 to ~0.98,
        # so both the intra-chunk decay matrix and the state passing matter.
        "dt": torch.rand(b, t, h, generator=gen, dtype=dtype) + 0.05,
        "A": -(torch.rand(h, generator=gen, dtype=dtype) * 3.5 + 0.5),
        "B": rnd(b, t, g, n),
        "C": rnd(b, t, g, n),
        "D": rnd(h) if with_D else None,
        "initial_state": rnd(b, h, p, n) if init_state else None,
    }
    for v in inputs.values():
        if v is not None:
            v.requires_grad_(True)
    return inputs


def run_with_grads(fn, inputs, seed=1, **kw):
    """(y, final_state, {name: grad}) for a random linear functional of (y, final_state)."""
    y, final = fn(**inputs, **kw)
    gen = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    gf = torch.randn(final.shape, generator=gen, dtype=final.dtype)
    names = [k for k, v in inputs.items() if v is not None]
    grads = torch.autograd.grad((y * gy).sum() + (final * gf).sum(), [inputs[k] for k in names])
    return y, final, dict(zip(names, grads))


@pytest.mark.parametrize(
    "t, chunk, g, init_state, with_D",
    [
        (63, 16, 2, True, True),  # odd length, 4 chunks with a padded tail, 2 groups
        (64, 16, 1, False, True),  # exact multiple of the chunk, one group
        (5, 16, 1, True, False),  # shorter than one chunk
        (37, 1, 2, True, True),  # chunk of one token: the chunked form degenerates to the loop
        (33, 32, 4, False, False),  # one group per head
    ],
)
def test_chunked_matches_loop(t, chunk, g, init_state, with_D):
    inputs = make_inputs(t=t, g=g, init_state=init_state, with_D=with_D)
    y_ref, f_ref, g_ref = run_with_grads(ssd_loop, inputs)
    y, f, grads = run_with_grads(ssd_chunked, inputs, chunk_size=chunk)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(f, f_ref, **TOL)
    assert grads.keys() == g_ref.keys()
    for name in g_ref:
        torch.testing.assert_close(grads[name], g_ref[name], **TOL, msg=lambda m, n=name: f"grad {n}: {m}")


def test_chunk_size_does_not_change_the_result():
    inputs = make_inputs(t=50)
    outs = [ssd_chunked(**inputs, chunk_size=c) for c in (4, 7, 64)]
    for y, f in outs[1:]:
        torch.testing.assert_close(y, outs[0][0], **TOL)
        torch.testing.assert_close(f, outs[0][1], **TOL)


def test_initial_state_continues_a_sequence():
    """Scanning [0, k) then [k, T) from the first part's final state == scanning [0, T)."""
    inputs = make_inputs(t=45, init_state=False)
    args = {k: v.detach() for k, v in inputs.items() if v is not None}
    y, f = ssd_chunked(**args, chunk_size=8)
    k = 19
    first = {n: (v[:, :k] if n in ("x", "dt", "B", "C") else v) for n, v in args.items()}
    second = {n: (v[:, k:] if n in ("x", "dt", "B", "C") else v) for n, v in args.items()}
    y1, f1 = ssd_chunked(**first, chunk_size=8)
    y2, f2 = ssd_chunked(**second, initial_state=f1, chunk_size=8)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y, **TOL)
    torch.testing.assert_close(f2, f, **TOL)


def test_low_precision_inputs_compute_in_fp32():
    inputs = {k: (v.detach().to(torch.bfloat16) if v is not None else None) for k, v in make_inputs(t=20).items()}
    y, f = ssd_chunked(**inputs, chunk_size=8)
    assert y.dtype == torch.bfloat16 and f.dtype == torch.float32, (y.dtype, f.dtype)
    y_ref, f_ref = ssd_loop(**inputs)
    torch.testing.assert_close(f, f_ref, rtol=1e-4, atol=1e-4)


def test_public_entry_point_uses_the_reference_on_cpu():
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(t=30).items()}
    y, f = ssd_scan(**inputs, chunk_size=8)
    y_ref, f_ref = ssd_chunked(**inputs, chunk_size=8)
    assert torch.equal(y, y_ref) and torch.equal(f, f_ref)


def test_kernels_package_is_ours_and_hidden_from_transformers():
    import kernels

    assert Path(kernels.__file__).resolve().parent == REPO / "kernels", (
        f"`import kernels` resolved to {kernels.__file__}, not this repository"
    )
    assert not hasattr(kernels, "__version__"), "a __version__ would let transformers read it as the hub package's"
    import_utils = importlib.import_module("transformers.utils.import_utils")
    assert import_utils.is_kernels_available() is False, "transformers believes HF `kernels` is installed"

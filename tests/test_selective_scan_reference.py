"""Chain of trust, first link for Mamba's S6: the token loop (the equation) == the chunked scan.

fp64, tight tolerance, outputs, final states and every gradient (u, delta, A, B, C, D, initial
state), odd lengths and lengths that are not a multiple of the chunk.
"""

from __future__ import annotations

import pytest
import torch

from kernels.selective_scan import selective_scan, selective_scan_chunked, selective_scan_loop

TOL = dict(rtol=1e-9, atol=1e-10)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)



def make_inputs(b=2, t=63, c=6, n=5, dtype=torch.float64, seed=0, init_state=True, with_D=True, strong=False):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    # S4D-real-like A = -(1..n) per channel, perturbed; delta in (0.01, 0.51). `strong` makes
    # delta * |A| reach ~80 per token: decays underflow to 0 and the chunk's total log-decay
    # reaches thousands, which would overflow a scan that divides by cumulative decays.
    scale = 10.0 if strong else 1.0
    A = -(torch.arange(1, n + 1, dtype=dtype) * (1 + 0.1 * torch.rand(c, n, generator=gen, dtype=dtype)))
    inputs = {
        "u": rnd(b, t, c),
        "delta": (torch.rand(b, t, c, generator=gen, dtype=dtype) * 0.5 + 0.01) * scale,
        "A": A,
        "B": rnd(b, t, n),
        "C": rnd(b, t, n),
        "D": rnd(c) if with_D else None,
        "initial_state": rnd(b, c, n) if init_state else None,
    }
    for v in inputs.values():
        if v is not None:
            v.requires_grad_(True)
    return inputs


def run_with_grads(fn, inputs, seed=1, **kw):
    y, final = fn(**inputs, **kw)
    gen = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    gf = torch.randn(final.shape, generator=gen, dtype=final.dtype)
    names = [k for k, v in inputs.items() if v is not None]
    grads = torch.autograd.grad((y * gy).sum() + (final * gf).sum(), [inputs[k] for k in names])
    return y, final, dict(zip(names, grads))


@pytest.mark.parametrize(
    "t, chunk, init_state, with_D, strong",
    [
        (63, 8, True, True, False),  # odd length, padded last chunk
        (64, 16, False, True, False),  # exact multiple
        (5, 16, True, False, False),  # shorter than one chunk
        (29, 1, True, True, False),  # chunk of one token
        (63, 16, True, True, True),  # very strong decays
    ],
)
def test_chunked_matches_loop(t, chunk, init_state, with_D, strong):
    inputs = make_inputs(t=t, init_state=init_state, with_D=with_D, strong=strong)
    y_ref, f_ref, g_ref = run_with_grads(selective_scan_loop, inputs)
    y, f, grads = run_with_grads(selective_scan_chunked, inputs, chunk_size=chunk)
    assert torch.isfinite(y).all() and torch.isfinite(f).all()
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(f, f_ref, **TOL)
    assert grads.keys() == g_ref.keys()
    for name in g_ref:
        torch.testing.assert_close(grads[name], g_ref[name], **TOL, msg=lambda m, n=name: f"grad {n}: {m}")


def test_initial_state_continues_a_sequence():
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(t=41, init_state=False).items()}
    args = {k: v for k, v in inputs.items() if v is not None}
    y, f = selective_scan_chunked(**args, chunk_size=8)
    k = 17
    seq = ("u", "delta", "B", "C")
    first = {n: (v[:, :k] if n in seq else v) for n, v in args.items()}
    second = {n: (v[:, k:] if n in seq else v) for n, v in args.items()}
    y1, f1 = selective_scan_chunked(**first, chunk_size=8)
    y2, f2 = selective_scan_chunked(**second, initial_state=f1, chunk_size=8)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y, **TOL)
    torch.testing.assert_close(f2, f, **TOL)


def test_fp32_chunked_is_as_accurate_as_the_fp32_loop():
    """In fp32 both forms should sit within a few ulps of the fp64 truth."""
    inputs64 = {k: (v.detach() if v is not None else None) for k, v in make_inputs(t=200, c=16, n=16).items()}
    inputs32 = {k: (v.float() if v is not None else None) for k, v in inputs64.items()}
    y64, _ = selective_scan_loop(**inputs64)
    err_loop = (selective_scan_loop(**inputs32)[0].double() - y64).abs().max()
    err_chunk = (selective_scan_chunked(**inputs32, chunk_size=16)[0].double() - y64).abs().max()
    assert err_chunk <= 4 * err_loop + 1e-6, f"chunked fp32 error {err_chunk:.2e} vs loop {err_loop:.2e}"


def test_public_entry_point_uses_the_reference_on_cpu():
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(t=30).items()}
    y, f = selective_scan(**inputs, chunk_size=8)
    y_ref, f_ref = selective_scan_chunked(**inputs, chunk_size=8)
    assert torch.equal(y, y_ref) and torch.equal(f, f_ref)

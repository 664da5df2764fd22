"""The Triton diversity loss (kernels/diversity) vs its plain-torch definition on the GPU: the
loss and the input gradient, fp32 and bf16, odd H and P (padded tiles), all-zero slots
(F.normalize's eps branch), leading dims and a non-contiguous input; rule in `_tol.py`."""

from __future__ import annotations

import os

import pytest
import torch

from kernels.diversity.reference import diversity_loss_ref

from ._tol import check

DEV = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"

SHAPES = [(8, 256, 16, 64), (3, 37, 4, 8), (2, 63, 20, 12), (1, 5, 16, 64)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_diversity_loss_matches_reference(shape, dtype):
    from kernels.diversity.op import diversity_loss

    gen = torch.Generator(device=DEV).manual_seed(0)
    y = torch.randn(*shape, device=DEV, generator=gen)
    y[0, 0, :2] = 0.0  # two all-zero slots
    y[..., 1, :] += 2.0 * y[..., 0, :]  # correlated slots: a Gram far from I
    y = y.to(dtype)
    g = torch.tensor(1.7, device=DEV)

    ours = y.clone().requires_grad_()
    loss = diversity_loss(ours)
    (loss * g).backward()
    ref_in = y.double().requires_grad_()
    ref = diversity_loss_ref(ref_in)
    (ref * g).backward()
    assert loss.dtype == torch.float32 and loss.shape == ()
    check(f"diversity{shape} loss", loss.reshape(1), ref.reshape(1), dtype)
    check(f"diversity{shape} dy", ours.grad, ref_in.grad, dtype)


def test_diversity_loss_non_contiguous_input():
    from kernels.diversity.op import diversity_loss

    base = torch.randn(2, 16, 33, 64, device=DEV)
    y = base[:, :, :16].transpose(0, 1)  # (16, 2, 16, 64), strided rows
    ours = y.detach().requires_grad_()
    loss = diversity_loss(ours)
    loss.backward()
    ref_in = y.detach().double().requires_grad_()
    ref = diversity_loss_ref(ref_in)
    ref.backward()
    check("diversity strided loss", loss.reshape(1), ref.reshape(1), torch.float32)
    check("diversity strided dy", ours.grad, ref_in.grad, torch.float32)

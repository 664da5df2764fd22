"""Plain-PyTorch reference of the short causal depthwise convolution (+ SiLU).

    y[b, t, c] = act(bias[c] + sum_{k < K} weight[c, k] * x[b, t - (K - 1) + k, c])

with x = 0 before the sequence start and act = SiLU or the identity: the short conv of Mamba,
Mamba2, HADES (over x, B, C) and of fla's attention-style layers (`hades.models.layers.ShortConv`
holds it as an nn.Conv1d whose weight (C, 1, K) is this `weight` unsqueezed).

Shapes: x (batch, seqlen, channels); weight (channels, K); bias (channels,) or None
-> y (batch, seqlen, channels) in x's dtype.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def causal_conv1d_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: bool = True) -> Tensor:
    """Depthwise causal conv over time (+ SiLU) in x's dtype; shapes in the module docstring."""
    _, t, c = x.shape
    k = weight.shape[-1]
    assert weight.shape == (c, k), f"weight must be (channels, K) = ({c}, K), got {tuple(weight.shape)}"
    y = F.conv1d(x.transpose(1, 2), weight.unsqueeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype),
                 padding=k - 1, groups=c)[..., :t]
    y = y.transpose(1, 2)
    return F.silu(y) if activation else y

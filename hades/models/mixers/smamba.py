"""Sparse Mamba (S-Mamba) token mixer: Hamdan, Pan & Cetin 2024, "Sparse Mamba: Introducing
Controllability, Observability, And Stability To Structural State Space Models", arXiv 2409.00563
(SC-Mamba and SO-Mamba; docs/smamba.md for what we could and could not check in the paper).

Mamba's S6 layer (`mamba.Mamba`: same in_proj, conv, x_proj, dt_proj, out_proj, D) with the
diagonal A replaced by a per-channel N x N companion matrix of N free parameters:

    x, z  = in_proj(u)                           D -> 2 * d_inner
    x     = silu(causal depthwise conv(x))
    dt, X = x_proj(x)                            d_inner -> dt_rank + N
    delta = softplus(dt_proj(dt))
    A_c   = companion(a_c)   p_c(s) = s^N + a_{c,N-1} s^{N-1} + ... + a_{c,0}
    controllable: h_t = exp(delta_t A_c) h_{t-1} + delta_t x_t e_N,    y_t = X_t . h_t + D x_t
    observable:   h_t = exp(delta_t A_c^T) h_{t-1} + delta_t x_t X_t,  y_t = h_t[N] + D x_t
    out   = out_proj(y * silu(z))

The canonical form fixes one of Mamba's B_t, C_t to e_N, so x_proj emits N fewer features per
token than Mamba's (dt_rank + 2N): d_inner * N fewer parameters per layer.

p_c is parameterised as a product of N/2 real quadratics s^2 + alpha s + beta (N numbers per
channel; every real monic polynomial of even degree is such a product). With `smamba_stable`,
alpha, beta = softplus(.) + 1e-5 > 0: exactly Hurwitz stability of each factor, so every root
of p_c -- every eigenvalue of A_c -- has negative real part by construction. Without it alpha,
beta are free (the paper's unconstrained coefficients). softplus, not Mamba's exp: a large step
on exp's log-value sends |lambda| ~ sqrt(beta) past what the eigenbasis maps (lambda^{N-1})
hold in fp32, while softplus grows linearly; the floor (the size of the paper's ST-Mamba2
margin, a_i >= 0 -> -1e-5) keeps Re(lambda) < 0 where softplus underflows to 0. The roots come
in closed form, and the scan runs in A's eigenbasis
(`kernels.companion_scan.companion_scan_chunked`), exact ZOH for A, Mamba's delta * B for B.

Paths: `reference` = the chunked scan under autograd; `fast` (CUDA, cfg.kernel = "auto") = the
Triton kernels of `kernels.companion_scan` (forward and backward, the readout as GEMMs).

Decode state: {"conv": (batch, d_inner, d_conv - 1), "ssm": (batch, d_inner, N, 2)}: the
eigenbasis state as (real, imag) pairs, so every state tensor stays real.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hades.config import ModelConfig
from kernels.companion_scan import (
    FORMS,
    companion_coefficients,
    companion_matrix,
    companion_scan,
    companion_scan_chunked,
    companion_scan_step,
    eigen_readout,
    quadratic_roots,
)

from ..layers import ShortConv
from .base import Mixer, MixerOutput, State
from .ssm_init import sample_dt_bias

STABILITY_FLOOR = 1e-5  # alpha, beta >= this when smamba_stable (module docstring)


class SparseMamba(Mixer):
    """SC-/SO-Mamba mixer. u: (batch, seqlen, d_model) -> (batch, seqlen, d_model)."""
    arch = "smamba"  # the id a config names (hades/archs.py finds it here)


    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__(cfg, layer_idx)
        assert cfg.smamba_form in FORMS, f"smamba_form must be one of {FORMS}, got {cfg.smamba_form!r}"
        assert cfg.d_state % 2 == 0, f"smamba needs an even d_state (N/2 quadratic factors), got {cfg.d_state}"
        self.form = cfg.smamba_form
        self.stable = cfg.smamba_stable
        self.d_inner = cfg.expand * cfg.d_model
        self.d_state = cfg.d_state
        self.dt_rank = cfg.dt_rank or math.ceil(cfg.d_model / 16)
        self.in_proj = nn.Linear(cfg.d_model, 2 * self.d_inner, bias=False)
        self.conv = ShortConv(self.d_inner, cfg.d_conv, activation=True, bias=True)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + self.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        # raw (alpha, beta) of each channel's N/2 quadratic factors: softplus^{-1} when stable
        self.A_alpha = nn.Parameter(torch.empty(self.d_inner, self.d_state // 2))
        self.A_beta = nn.Parameter(torch.empty(self.d_inner, self.d_state // 2))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, cfg.d_model, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        self.conv.conv.reset_parameters()
        std = self.dt_rank**-0.5  # Mamba's dt init, unchanged (mamba.Mamba.init_weights)
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        self.dt_proj.bias.copy_(sample_dt_bias((self.d_inner,), self.cfg, self.dt_proj.bias.device))
        # Butterworth roots, exp(i pi (2k + N - 1) / 2N), k = 1..N: unit modulus, spread over the
        # left half-plane, factor j = s^2 + 2 sin((2j - 1) pi / 2N) s + 1. Of the root sets we
        # tried it keeps the companion best conditioned (cond(V) ~ 8e6 at N = 16, vs ~ 1e21 for
        # Mamba's S4D-real -1..-N, whose companion has coefficients up to ~1e14: docs/smamba.md).
        j = torch.arange(1, self.d_state // 2 + 1, dtype=torch.float64, device=self.A_alpha.device)
        alpha = 2 * torch.sin((2 * j - 1) * math.pi / (2 * self.d_state))
        beta = torch.ones_like(alpha)
        if self.stable:  # inverse of softplus + floor (sample_dt_bias's inverse softplus)
            alpha, beta = (v - STABILITY_FLOOR for v in (alpha, beta))
            alpha, beta = (v + torch.log(-torch.expm1(-v)) for v in (alpha, beta))
        self.A_alpha.copy_(alpha.expand(self.d_inner, -1))
        self.A_beta.copy_(beta.expand(self.d_inner, -1))
        self.D.fill_(1.0)

    def no_weight_decay(self) -> set[str]:
        return {"A_alpha", "A_beta", "D", "dt_proj.bias"}

    # -- the state matrix ------------------------------------------------------------------------
    def quadratic_factors(self) -> tuple[Tensor, Tensor]:
        """(alpha, beta): (d_inner, N/2) each, fp64: p_c(s) = prod_j (s^2 + alpha_j s + beta_j).
        fp64 because the Vandermonde maps of the eigenbasis amplify rounding (docs/smamba.md)."""
        alpha, beta = self.A_alpha.double(), self.A_beta.double()
        if not self.stable:
            return alpha, beta
        return F.softplus(alpha) + STABILITY_FLOOR, F.softplus(beta) + STABILITY_FLOOR

    def coefficients(self) -> Tensor:
        """(d_inner, N) fp64: a_0..a_{N-1}, the free last row (controllable) of each A_c."""
        return companion_coefficients(*self.quadratic_factors())

    def companion_A(self) -> Tensor:
        """(d_inner, N, N) fp64: the continuous-time state matrix in the configured form."""
        return companion_matrix(self.coefficients(), self.form)

    def eigenvalues(self) -> Tensor:
        """(d_inner, N) complex128: the roots of p_c = the eigenvalues of A_c."""
        return quadratic_roots(*self.quadratic_factors())

    # -- forward / decode ---------------------------------------------------------------------------
    def _ssm_inputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (..., d_inner) after the conv -> delta (..., d_inner) fp32 and X (..., N): C_t
        (controllable) or B_t (observable)."""
        dt, X = torch.split(self.x_proj(x), [self.dt_rank, self.d_state], dim=-1)
        delta = F.softplus(F.linear(dt, self.dt_proj.weight).float() + self.dt_proj.bias.float())
        return delta, X

    def _scan(self, x: Tensor, delta: Tensor, lam: Tensor, X: Tensor, D: Tensor, fast: bool) -> tuple[Tensor, Tensor]:
        # the scan computes in x's precision (>= fp32): smamba_scan_dtype float64 runs it in
        # complex128, since moving into and out of A's eigenbasis amplifies rounding by the
        # eigenvector matrix's condition number (docs/smamba.md "Precision")
        wide = self.cfg.smamba_scan_dtype == "float64"
        # fast: the Triton kernels on CUDA (kernels.companion_scan.companion_scan; the reference
        # elsewhere); else the chunked reference under autograd
        scan = companion_scan if fast else companion_scan_chunked
        y, state = scan(x.double() if wide else x, delta, lam, X, D, form=self.form, chunk_size=self.cfg.chunk_size)
        return y.to(x.dtype), state

    def forward(self, u: Tensor, return_state: bool = False) -> MixerOutput:
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (b, t, d_inner) each
        x, conv_state = self.conv(x, return_state=return_state)
        delta, X = self._ssm_inputs(x)
        y, ssm_state = self._scan(x, delta, self.eigenvalues(), X, self.D.float(), fast=self.use_fast_path(x))
        out = self.out_proj(y * F.silu(z))
        state = {"conv": conv_state, "ssm": torch.view_as_real(ssm_state)} if return_state else None
        return MixerOutput(out, {}, state)

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        ssm_dtype = torch.promote_types(dtype, torch.float32)  # the scan runs in >= fp32
        if self.cfg.smamba_scan_dtype == "float64":
            ssm_dtype = torch.float64
        return {
            "conv": self.conv.init_state(batch_size, self.d_inner, device, dtype),
            "ssm": torch.zeros(batch_size, self.d_inner, self.d_state, 2, device=device, dtype=ssm_dtype),
        }

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (b, d_inner) each
        x, conv_state = self.conv.step(x, state["conv"])
        delta, X = self._ssm_inputs(x)
        lam = self.eigenvalues()
        g = torch.view_as_complex(state["ssm"].contiguous())
        y, g = companion_scan_step(g, x, delta, lam, eigen_readout(lam), X, self.D.float(), self.form)
        return self.out_proj(y * F.silu(z)), {"conv": conv_state, "ssm": torch.view_as_real(g)}

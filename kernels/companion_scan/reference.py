"""Plain-PyTorch references for Sparse Mamba's selective scan with a companion-form state matrix
(Hamdan, Pan & Cetin 2024, "Sparse Mamba", arXiv 2409.00563: SC-Mamba and SO-Mamba).

Per channel c the continuous-time state matrix is the N x N companion matrix of the monic
polynomial p_c(s) = s^N + a_{N-1} s^{N-1} + ... + a_0 (N free parameters a_0..a_{N-1}):

    controllable (SC):  A = [[0, 1, 0, ...], ..., [0, ..., 0, 1], [-a_0, -a_1, ..., -a_{N-1}]]
                        B = e_N (fixed),  C_t = the free output row (from the input, as Mamba's C)
    observable   (SO):  A = A_SC^T,  C = e_N^T (fixed),  B_t = the free input column

and the selective recurrence is Mamba's (Gu & Dao 2023, eq. 2a/2b, ZOH for A, Euler for B):

    h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t,     y_t = C_t . h_t + D u_t.

Two computations of the same recurrence:
  * `companion_scan_loop`: the definition, token by token, with the dense companion matrix and
    `torch.linalg.matrix_exp` of delta_t A at every token (O(N^3) per token; tests only).
  * `companion_scan_chunked`: the same map in the eigenbasis of A. With distinct roots
    lambda_1..lambda_N of p, A_SC = V diag(lambda) V^{-1} with V the Vandermonde matrix
    V[i, k] = lambda_k^i, and (V^{-1} e_N)_k = 1 / p'(lambda_k). Then exp(delta A) =
    V diag(exp(delta lambda)) V^{-1} exactly, and the scan is diagonal (complex):

        SC: g_t = exp(delta_t lambda) * g_{t-1} + delta_t u_t,       y_t = Re sum_k P_t[k] g_t[k]
        SO: g_t = exp(delta_t lambda) * g_{t-1} + delta_t u_t P_t,   y_t = Re sum_k g_t[k]
        P_t[k] = x_t(lambda_k) / p'(lambda_k),  x_t(s) = sum_i X_t[i] s^i  (X_t = C_t or B_t)

    (SC: h = V diag(1/p') g; SO: g = diag(1/p') V^T h -- both transfer functions are
    x_t(s) / p(s).) It runs as `selective_scan_chunked` does: 2L + seqlen/L vectorised steps.

The eigenvalues come from the caller, which builds p as a product of N/2 real quadratics
(`quadratic_roots`); `companion_coefficients`/`companion_matrix` give the explicit form.
Complex roots are carried as N complex numbers (conjugates included), not folded in pairs:
a factor with two real roots has no conjugate partner to fold.

Shapes:
    u, delta: (batch, seqlen, channels), delta after softplus
    lam: (channels, N) complex roots of p         X: (batch, seqlen, N) real (C_t or B_t)
    D: (channels,) or None                        state: (batch, channels, N) complex (eigenbasis)
    A (loop only): (channels, N, N) real, the companion matrix; its state is in A's coordinates
    ->  y: (batch, seqlen, channels) in u's dtype, final state in the complex compute dtype
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

FORMS = ("controllable", "observable")


# -- the companion matrix and its eigen-decomposition ----------------------------------------------
def quadratic_roots(alpha: Tensor, beta: Tensor) -> Tensor:
    """Roots of prod_j (s^2 + alpha_j s + beta_j): (..., N/2) real -> (..., N) complex, in the
    complex dtype of alpha's precision. Stable formula: the larger-magnitude root
    q = -(alpha + sign(alpha) sqrt(alpha^2 - 4 beta)) / 2 directly, the other as beta / q (Vieta),
    so a small real root is not the difference of two nearly equal numbers."""
    ctype = torch.promote_types(alpha.dtype, torch.complex64)
    a, b = alpha.to(ctype), beta.to(ctype)
    sign = torch.where(alpha >= 0, 1.0, -1.0).to(ctype)
    q = -(a + sign * torch.sqrt(a * a - 4 * b)) / 2
    return torch.cat([q, b / q], dim=-1)


def companion_coefficients(alpha: Tensor, beta: Tensor) -> Tensor:
    """(..., N/2) quadratic factors -> (..., N) coefficients a_0..a_{N-1} of their monic product."""
    p = torch.ones_like(alpha[..., :1])  # increasing powers; the leading 1 stays last
    for j in range(alpha.shape[-1]):
        a, b = alpha[..., j : j + 1], beta[..., j : j + 1]
        # (s^2 + a s + b) * p(s), coefficient by coefficient
        p = F.pad(b * p, (0, 2)) + F.pad(a * p, (1, 1)) + F.pad(p, (2, 0))
    return p[..., :-1]


def companion_matrix(coef: Tensor, form: str) -> Tensor:
    """(..., N) coefficients -> (..., N, N) companion matrix: ones on the super-diagonal, the last
    row -a (controllable), or its transpose (observable)."""
    assert form in FORMS, f"form must be one of {FORMS}, got {form!r}"
    n = coef.shape[-1]
    A = torch.diag_embed(coef.new_ones(*coef.shape[:-1], n - 1), offset=1)
    A[..., -1, :] = -coef
    return A if form == "controllable" else A.transpose(-1, -2)


def eigen_readout(lam: Tensor) -> Tensor:
    """W[c, k, i] = lambda_k^i / p'(lambda_k): (channels, N) complex -> (channels, N, N), so that
    P_t[c, k] = sum_i X_t[i] W[c, k, i]. p'(lambda_k) = prod_{j != k} (lambda_k - lambda_j)."""
    n = lam.shape[-1]
    diff = lam[..., :, None] - lam[..., None, :]  # (c, k, j)
    eye = torch.eye(n, dtype=torch.bool, device=lam.device)
    factors = torch.where(eye, torch.ones_like(diff), diff)
    # products and powers as running multiplications, not prod() / pow(): the backward of prod
    # tests its input for zeros on the host (a sync that a CUDA-graph capture forbids: the
    # trainer's captured step failed on it)
    dp = factors[..., 0]
    for j in range(1, n):
        dp = dp * factors[..., j]  # (c, k)
    powers = [torch.ones_like(lam)]
    for _ in range(1, n):
        powers.append(powers[-1] * lam)
    return torch.stack(powers, dim=-1) / dp[..., None]  # (c, k, i)


# -- the scan ---------------------------------------------------------------------------------------
def _decay(delta: Tensor, lam: Tensor) -> Tensor:
    """exp(delta * lam) for real delta, complex lam, as modulus and angle: torch.polar runs real
    exp / cos / sin, several times faster on CPU than the complex exp."""
    return torch.polar(torch.exp(delta * lam.real), delta * lam.imag)


def _check(u: Tensor, delta: Tensor, X: Tensor, n: int, form: str) -> None:
    assert form in FORMS, f"form must be one of {FORMS}, got {form!r}"
    assert delta.shape == u.shape, f"delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}"
    b, t, _ = u.shape
    assert X.shape == (b, t, n), f"X must be (batch, seqlen, dstate) = {(b, t, n)}, got {tuple(X.shape)}"


def _real_dtype(u: Tensor) -> torch.dtype:
    return torch.promote_types(u.dtype, torch.float32)


def _complex_dtype(u: Tensor) -> torch.dtype:
    return torch.promote_types(_real_dtype(u), torch.complex64)


def companion_scan_step(
    state: Tensor, u: Tensor, delta: Tensor, lam: Tensor, W: Tensor, X: Tensor, D: Tensor | None, form: str
) -> tuple[Tensor, Tensor]:
    """One token in the eigenbasis. state: (batch, channels, N) complex; u, delta: (batch,
    channels); lam: (channels, N); W = eigen_readout(lam); X: (batch, N). -> y, new state."""
    ctype, rtype = state.dtype, state.real.dtype
    uf, df = u.to(rtype), delta.to(rtype)
    P = torch.einsum("bi,cki->bck", X.to(ctype), W.to(ctype))
    du = (df * uf)[..., None]
    decay = _decay(df[..., None], lam.to(ctype))
    if form == "controllable":
        state = decay * state + du
        y = (P * state).sum(-1).real
    else:
        state = decay * state + du * P
        y = state.sum(-1).real
    if D is not None:
        y = y + D.to(rtype) * uf
    return y.to(u.dtype), state


def companion_scan_loop(
    u: Tensor, delta: Tensor, A: Tensor, X: Tensor, D: Tensor | None = None, form: str = "controllable",
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The definition, token by token, with the dense companion A (channels, N, N) and the exact
    exp(delta_t A). State: (batch, channels, N) real, in A's own coordinates."""
    n = A.shape[-1]
    _check(u, delta, X, n, form)
    b, t, c = u.shape
    dtype = _real_dtype(u)
    Af, Xf = A.to(dtype), X.to(dtype)
    e_n = torch.zeros(n, dtype=dtype, device=u.device)
    e_n[-1] = 1
    h = u.new_zeros(b, c, n, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    ys = []
    for i in range(t):
        ui, di = u[:, i].to(dtype), delta[:, i].to(dtype)
        Abar = torch.linalg.matrix_exp(di[..., None, None] * Af)  # (b, c, N, N)
        Bt = e_n if form == "controllable" else Xf[:, i, None, :]  # (N,) or (b, 1, N)
        Ct = Xf[:, i, None, :] if form == "controllable" else e_n
        h = (Abar @ h[..., None])[..., 0] + (di * ui)[..., None] * Bt
        y = (h * Ct).sum(-1)
        ys.append(y if D is None else y + D.to(dtype) * ui)
    y = torch.stack(ys, dim=1) if ys else u.new_zeros(b, 0, c, dtype=dtype)
    return y.to(u.dtype), h


def companion_scan_chunked(
    u: Tensor, delta: Tensor, lam: Tensor, X: Tensor, D: Tensor | None = None, form: str = "controllable",
    initial_state: Tensor | None = None, chunk_size: int = 32,
) -> tuple[Tensor, Tensor]:
    """The eigenbasis scan in chunks (module docstring; the three passes of
    `kernels.selective_scan.reference.selective_scan_chunked`, on complex decays of modulus
    exp(delta Re lambda) <= 1 when A is stable). seqlen need not be a multiple of chunk_size:
    the tail is padded with delta = 0 (decay 1, no input)."""
    n = lam.shape[-1]
    _check(u, delta, X, n, form)
    assert chunk_size > 0, f"chunk_size must be positive, got {chunk_size}"
    b, t, c = u.shape
    rtype, ctype = _real_dtype(u), _complex_dtype(u)
    L = chunk_size
    pad = (-t) % L
    uf, df, Xf = (v.to(rtype) for v in (u, delta, X))
    if pad:
        uf, df, Xf = (F.pad(v, (0, 0, 0, pad)) for v in (uf, df, Xf))
    lamc = lam.to(ctype)
    W = eigen_readout(lam).to(ctype)  # (c, k, i)

    # Position-major views, as in selective_scan_chunked (unbind: no full-size zero grads).
    d_l = rearrange(df, "b (k l) c -> l b k c 1", l=L).unbind(0)
    du_l = rearrange((df * uf).to(ctype), "b (k l) c -> l b k c 1", l=L).unbind(0)
    X_l = rearrange(Xf.to(ctype), "b (k l) n -> l b k n", l=L).unbind(0)
    decay = [_decay(d, lamc) for d in d_l]  # (b, k, c, N) complex each
    # P_t = x_t(lambda) / p'(lambda): one (b k, N) x (N, c N) product per position
    P = [torch.einsum("bki,cmi->bkcm", x, W) for x in X_l]
    inputs = du_l if form == "controllable" else [du * p for du, p in zip(du_l, P)]

    # 1. Each chunk's end state from a zero start.
    local = inputs[0] * torch.ones_like(decay[0])  # complex, full shape even where the input broadcasts
    for i in range(1, L):
        local = decay[i] * local + inputs[i]

    # 2. Carry the true state across chunks: a chunk's decay is exp(lambda * sum of its deltas).
    chunk_decay = _decay(rearrange(df, "b (k l) c -> b k l c", l=L).sum(2)[..., None], lamc)
    state = u.new_zeros(b, c, n, dtype=ctype) if initial_state is None else initial_state.to(ctype)
    entering = []
    for decay_k, local_k in zip(chunk_decay.unbind(1), local.unbind(1)):
        entering.append(state)
        state = decay_k * state + local_k

    # 3. Rescan every chunk from its entering state and read out.
    h = torch.stack(entering, dim=1)  # (b, k, c, N)
    ys = []
    for i in range(L):
        h = decay[i] * h + inputs[i]
        ys.append((h * P[i] if form == "controllable" else h).sum(-1).real)  # (b, k, c)
    y = rearrange(torch.stack(ys, dim=2), "b k l c -> b (k l) c")[:, :t]
    if D is not None:
        y = y + D.to(rtype) * uf[:, :t]
    return y.to(u.dtype), state

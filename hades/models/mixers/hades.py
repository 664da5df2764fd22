"""HADES token mixer: "Graph Signal Processing Meets Mamba2: Adaptive Filter Bank via Delta
Modulation", Section 3 (eq. 5-7) and the loss of Section 3.3, as the authors' code computes it
(docs/paper.md "The HADES mixer", steps 1-9).

Mamba2 read as a filter bank: each SSD head is a filter. Of a bank of M filters, H are active
per token: S shared filters (always on) and Q experts picked by a router from E candidates. A
chosen filter only selects which Δ channel drives a slot; the recurrence parameters (A, D) belong
to the H slots. The router sees the token's spectral residual r_t = u_t - mean(u_1..u_t) and
also shifts the experts' Δ (the "spectral bias" γ·b).

Paper symbol -> code name (identical in config keys, see hades/config.py):

    M   n_filters     filters in the bank = expand * d_model / head_dim
    H   n_active      active slots per token (SSD heads actually run)
    S   n_shared      shared slots; their filters are the fixed last S ids E .. M-1
    Q   n_experts     routed slots per token = H - S
    E   n_candidates  filters the router picks the Q experts from = M - S
    γ   gamma         per-slot scale of the spectral bias (H values, init gamma_init)
    Δ   delta         the time step after routing, softplus(dt_raw[id] + dt_bias + γ b)
    s_t scores        router scores over the E candidates (first E outputs of h_proj)
    b_t bias          spectral bias of the Q expert slots (last Q outputs of h_proj)

Steps (u: (batch, seqlen, D)):
  1. in_proj: D -> [z (H P), x (H P), B (G N), C (G N), dt_raw (M)]
  2. causal depthwise conv (d_conv) + SiLU over [x, B, C]
  3. r_t = u_t - mean(u_1..u_t), the prefix mean including t (also in `step`: the authors'
     decode path divides the sum of the previous tokens by t - 1, a bug not reproduced here)
  4. [s_t, b_t] = h_proj([r_t || dt_raw_t]), Linear(D + M -> E + Q, no bias), in fp32; the
     parallel forward computes W_r r_t as the prefix-centred W_r u_t (r is linear in u), so the
     prefix mean runs over E + Q channels instead of D (`_router_from_u`)
  5. slot ids = [top-Q(s_t), E .. M-1]; top-k passes no gradient, so s_t learns only through
     L_balance
  6. Δ_j = softplus(dt_raw[id_j] + dt_bias + γ_j b_t,j) for expert slots, without γ b for
     shared ones; dt_bias is ONE learnable scalar
  7. SSD over the H slots with A_log, D per slot (kernels/ssd)
  8. out_proj(RMSNorm(y * silu(z)))
  9. aux losses, unweighted (the LM applies λ1, λ2): "balance" = Var(s)/(mean(s)^2 + 1e-10) over
     all score entries (unbiased variance, as torch.var in the authors' code); "diversity" =
     mean over (batch, time, i, j) of (<ŷ_i, ŷ_j> - δ_ij)^2, ŷ the L2-normalised per-slot outputs
     after the gated norm.

Degenerate configs:
  * S = 0 (hades_expert_only): all H slots routed from E = M candidates.
  * S = H (hades_shared_only): Q = 0, nothing is routed, but h_proj stays, as in the authors'
    code (Linear(D + M -> E + Q = E), scores only, no bias outputs): the scores s_t are computed
    and L_balance applied to them exactly as for full HADES, and never used for routing. That
    is not dead weight: L_balance's gradient flows through h_proj's inputs into in_proj (all M
    dt_raw rows) and, through r_t, into the block input and the residual stream, so dropping it
    would train a different model. The forward output does not depend on the scores: with
    γ = 0 this variant is exactly a Mamba2 mixer of H heads (tests/test_ssm_mixers.py). in_proj
    keeps its M dt_raw outputs so the layout matches the routed variants; the shared slots read
    the last S, the first E feed only h_proj.
  * E = 0 (M = S: every filter shared, no candidates): no scores at all, so h_proj is None and
    "balance" is a constant 0 (the authors' h_proj would have 0 outputs, and the variance of
    an empty score tensor is not a loss).

Analysis hooks (nn.Identity, fed in `forward`; read them with register_forward_hook):
hook_slot_outputs (B, T, H, P) after the gated norm, hook_delta (B, T, H), hook_delta_no_bias
(B, T, H), hook_routing (B, T, H) int64 filter ids. `mixer.spectral_bias = False` drops γ b
(Figure 2c).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from hades.config import ModelConfig
from kernels.diversity import diversity_loss as diversity_loss_fused
from kernels.diversity import diversity_loss_ref
from kernels.router import in_router_proj
from kernels.ssd import ssd_chunked, ssd_scan, ssd_step

from ..layers import GatedRMSNorm, ShortConv
from .base import Mixer, MixerOutput, State
from .ssm_init import sample_A_log, sample_dt_bias

BALANCE_EPS = 1e-10


def balance_loss(scores: Tensor) -> Tensor:
    """Squared coefficient of variation of all router scores: Var(s) / (mean(s)^2 + eps)."""
    s = scores.float()
    if s.numel() < 2:
        return s.new_zeros(())
    return s.var() / (s.mean() ** 2 + BALANCE_EPS)


# "diversity": kernels.diversity (Triton on CUDA; diversity_loss_ref is the definition, the
# same function the authors' code computes with F.normalize and a Gram matrix)
diversity_loss = diversity_loss_ref


class HadesMixer(Mixer):
    """HADES mixer. u: (batch, seqlen, d_model) -> (batch, seqlen, d_model).

    Decode state: {"conv": (batch, H P + 2 G N, d_conv - 1), "ssm": (batch, H, P, N),
                   "u_sum": (batch, D) fp32 sum of the inputs so far, "n_tokens": (batch,) int64}.
    """
    arch = "hades"  # the id a config names (hades/archs.py finds it here)


    # the authors' mamba_ssm MixerModel: PyTorch's default Linear init, rescale_prenorm_residual
    torch_default_linear_init = True
    rescale_out_proj_init = True

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__(cfg, layer_idx)
        self.n_filters = M = cfg.n_filters
        self.n_active = H = cfg.n_active
        self.n_shared = S = cfg.n_shared
        self.n_experts = Q = cfg.n_experts
        self.n_candidates = E = cfg.n_candidates
        self.head_dim = P = cfg.head_dim
        self.d_state = N = cfg.d_state
        self.n_groups = G = cfg.n_groups
        assert 0 <= S <= H <= M and Q <= E, f"need 0 <= S <= H <= M and Q <= E; got S={S} H={H} M={M} Q={Q} E={E}"
        assert H % G == 0, f"n_groups G={G} must divide n_active H={H}"
        self.d_ssm = H * P  # the SSM width: H slots, not M filters (the parameter saving)

        self.in_proj = nn.Linear(cfg.d_model, 2 * self.d_ssm + 2 * G * N + M, bias=False)
        self.conv = ShortConv(self.d_ssm + 2 * G * N, cfg.d_conv, activation=True, bias=True)
        # kept whenever there are candidates to score, also with Q = 0 (module docstring)
        self.h_proj = nn.Linear(cfg.d_model + M, E + Q, bias=False) if E > 0 else None
        self.dt_bias = nn.Parameter(torch.empty(1))
        self.gamma = nn.Parameter(torch.empty(H))
        self.A_log = nn.Parameter(torch.empty(H))
        self.D = nn.Parameter(torch.empty(H))
        self.norm = GatedRMSNorm(self.d_ssm, cfg.norm_eps, group_size=self.d_ssm // G)
        self.out_proj = nn.Linear(self.d_ssm, cfg.d_model, bias=False)

        self.hook_slot_outputs = nn.Identity()
        self.hook_delta = nn.Identity()
        self.hook_delta_no_bias = nn.Identity()
        self.hook_routing = nn.Identity()
        self.spectral_bias = True
        # torch.compile the router glue when training on CUDA (kernel: auto); off for debugging
        self.compile_router = True
        self._route_compiled = None
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        self.conv.conv.reset_parameters()  # PyTorch's default conv init, as the authors keep it
        self.dt_bias.copy_(sample_dt_bias((1,), self.cfg, self.dt_bias.device))
        self.gamma.fill_(self.cfg.gamma_init)
        self.A_log.copy_(sample_A_log(self.n_active, self.A_log.device))
        self.D.fill_(1.0)
        self.norm.weight.fill_(1.0)

    def no_weight_decay(self) -> set[str]:
        return {"A_log", "D", "dt_bias", "gamma"}

    def shared_ids(self, device=None) -> Tensor:
        """The fixed filter ids of the S shared slots: E .. M-1, (S,) int64.

        Built on demand rather than kept as a buffer: a non-persistent buffer is not in the
        checkpoint, and HF's from_pretrained (meta-device init, then load) leaves it uninitialised.
        """
        return torch.arange(self.n_candidates, self.n_filters, device=device)

    # -- steps 1, 2: projections ---------------------------------------------------------------
    def _sizes(self) -> list[int]:
        return [self.d_ssm, self.d_ssm + 2 * self.n_groups * self.d_state, self.n_filters]

    def _split(self, zxbcdt: Tensor, slab=None) -> tuple[Tensor, Tensor, Tensor]:
        """(..., in_proj width) -> z (..., H P), xBC (..., H P + 2 G N), dt_raw (..., M); slab:
        the `grad_slab` of zxbcdt, or None."""
        return slab.split(zxbcdt) if slab is not None else torch.split(zxbcdt, self._sizes(), dim=-1)

    def _ssm_inputs(self, xBC: Tensor, slab=None) -> tuple[Tensor, Tensor, Tensor]:
        """(..., H P + 2 G N) -> x (..., H, P), B, C (..., G, N); slab: xBC's, or None."""
        gn = self.n_groups * self.d_state
        x, B, C = slab.split(xBC) if slab is not None else torch.split(xBC, [self.d_ssm, gn, gn], dim=-1)
        x = rearrange(x, "... (h p) -> ... h p", p=self.head_dim)
        B = rearrange(B, "... (g n) -> ... g n", g=self.n_groups)
        C = rearrange(C, "... (g n) -> ... g n", g=self.n_groups)
        return x, B, C

    # -- steps 3-6: router and Δ ------------------------------------------------------------------
    def _router_weights(self) -> tuple[Tensor, Tensor]:
        """h_proj's weight split by input: W_r (E + Q, D) reads r_t, W_dt (E + Q, M) reads dt_raw."""
        return self.h_proj.weight.split([self.cfg.d_model, self.n_filters], dim=1)

    def _router_proj(self, u: Tensor) -> Tensor:
        """u: (B, T, D) -> v = W_r u, (B, T, E + Q), in fp32 outside autocast (fp64 stays fp64)."""
        W_r, _ = self._router_weights()
        ct = torch.promote_types(u.dtype, torch.float32)
        with torch.autocast(u.device.type, enabled=False):
            return F.linear(u.to(ct), W_r.to(ct))

    @staticmethod
    def _prefix_centred(v: Tensor) -> Tensor:
        """v (B, T, C) -> v_t - mean(v_1..v_t), in v's dtype."""
        t = v.shape[1]
        count = torch.arange(1, t + 1, device=v.device, dtype=v.dtype)
        # the scan along the innermost axis: PyTorch's scan over a middle axis runs one thread
        # per (batch, channel) and took ~0.4 ms per call on the H100 even for 32 channels
        csum = torch.cumsum(v.transpose(1, 2).contiguous(), dim=-1).transpose(1, 2)
        return v - csum / count[:, None]

    def _router_from_u(self, u: Tensor) -> Tensor:
        """u: (B, T, D) -> W_r r_t, (B, T, E + Q) fp32, r_t = u_t - mean(u_1..u_t) (step 3).

        r_t is linear in u, so W_r r_t = v_t - mean(v_1..v_t) with v = W_r u: the prefix mean
        runs over the E + Q router outputs instead of the D model channels (a cumsum over time of
        a (B, T, D) fp32 tensor was HADES's largest single GPU cost, docs/benchmarks.md). Same
        function as h_proj(r) up to fp32 rounding; computed in fp32 outside autocast, so the
        cancellation in u_t - mean is not rounded to bf16 first. `step` forms r_t explicitly
        (tests/test_lm.py: decoding == this parallel form)."""
        return self._prefix_centred(self._router_proj(u))

    def _route(self, r_proj: Tensor | None, dt_raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """r_proj: (..., E + Q) = W_r r_t or None, dt_raw: (..., M) -> delta (..., H) fp32,
        delta_no_bias (..., H) fp32 (Δ without γ b), ids (..., H) int64 (slot order: Q experts,
        then S shared), scores (..., E) fp32, None when r_proj is. r_proj may be None only when
        Q = 0 (nothing routed: without h_proj, or when decoding, where the scores are unused)."""
        Q, S = self.n_experts, self.n_shared
        shared = self.shared_ids(dt_raw.device).expand(*dt_raw.shape[:-1], S)
        scores, bias = None, None
        if r_proj is not None:
            # [s_t, b_t] = h_proj([r_t || dt_raw_t]) = W_r r_t + W_dt dt_raw_t, in fp32
            _, W_dt = self._router_weights()
            ct = torch.promote_types(r_proj.dtype, torch.float32)
            with torch.autocast(dt_raw.device.type, enabled=False):
                router = r_proj.to(ct) + F.linear(dt_raw.to(ct), W_dt.to(ct))
            scores, bias = torch.split(router, [self.n_candidates, Q], dim=-1)
        if Q > 0:
            experts = torch.topk(scores, Q, dim=-1).indices  # indices: no gradient flows
            ids = torch.cat([experts, shared], dim=-1)
        else:
            ids = shared
        # dt_bias and softplus in fp32: under bf16 autocast small time steps would be quantised.
        base = torch.gather(dt_raw.float(), -1, ids) + self.dt_bias.float()
        delta_no_bias = F.softplus(base)
        if Q > 0 and self.spectral_bias:
            # γ b shifts only the expert slots (the first Q); shared slots get no bias.
            base = base + F.pad(self.gamma[:Q].float() * bias.float(), (0, S))
            delta = F.softplus(base)
        else:
            delta = delta_no_bias
        return delta, delta_no_bias, ids, scores

    def _route_from_proj(self, v: Tensor | None, dt_raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Steps 3-6 of the parallel forward plus L_balance, after the router's one matrix
        product: v = W_r u (B, T, E + Q) fp32 (`_router_proj`; None without h_proj), dt_raw (B, T, M)
        -> delta, delta_no_bias (B, T, H) fp32, ids (B, T, H) int64, balance () fp32.

        Plain tensor ops only, so that torch.compile can fuse them: eagerly they are ~30 kernel
        launches forward and more backward per layer, and on an H100 HADES's step was bound by
        the CPU issuing them (docs/benchmarks.md). The product stays outside: inside the
        compiled graph Inductor copied u and its transpose for the backward (~0.07 ms a layer)."""
        r_proj = self._prefix_centred(v) if v is not None else None  # step 3 folded into W_r
        delta, delta_no_bias, ids, scores = self._route(r_proj, dt_raw)  # steps 4-6
        balance = balance_loss(scores) if scores is not None else dt_raw.new_zeros((), dtype=torch.float32)
        return delta, delta_no_bias, ids, balance

    # -- parallel forward --------------------------------------------------------------------------
    def _projections(self, u: Tensor) -> tuple[Tensor, Tensor | None]:
        """u (B, T, D) -> in_proj(u), and v = W_r u in fp32 (None without h_proj). On the fast path
        with fp32 u (the block norm's output beside the fp32 residual) one op computes both and
        sums u's two gradients in one kernel (kernels/router: the cast, the fp32 product and the
        add of the plain path cost ~0.2 ms a layer at the paper's shape on an H100)."""
        if self.h_proj is not None and self.use_fast_path(u) and u.dtype == torch.float32:
            dev = u.device.type
            dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else u.dtype
            return in_router_proj(u, self.in_proj.weight, self._router_weights()[0], dtype)
        v = self._router_proj(u) if self.h_proj is not None else None  # W_r u, one fp32 product
        return self.in_proj(u), v

    def forward(self, u: Tensor, return_state: bool = False) -> MixerOutput:
        b, t, _ = u.shape
        zxbcdt, v = self._projections(u)  # step 1 and the router's product (step 4)
        slab = self.grad_slab(zxbcdt, self._sizes())  # (the gradients of z, xBC written in place)
        z, xBC, dt_raw = self._split(zxbcdt, slab)
        xBC, conv_state = self.conv(xBC, return_state=return_state, dx_into=slab and slab.part(1))  # step 2
        gn = self.n_groups * self.d_state
        slab_xbc = self.grad_slab(xBC, [self.d_ssm, gn, gn]) if slab is not None else None
        x, B, C = self._ssm_inputs(xBC, slab_xbc)

        # steps 3-6 and the balance loss (step 9): ~30 small tensor ops, fused by torch.compile
        # when training on CUDA (`_route_from_proj`)
        route = self._route_from_proj
        if self.use_fast_path(x) and torch.is_grad_enabled() and self.compile_router:
            if self._route_compiled is None:
                self._route_compiled = torch.compile(self._route_from_proj, dynamic=False)
            route = self._route_compiled
        delta, delta_no_bias, ids, balance = route(v, dt_raw)
        delta = self.hook_delta(delta)
        self.hook_delta_no_bias(delta_no_bias)
        self.hook_routing(ids)

        A = -torch.exp(self.A_log.float())  # step 7
        if self.use_fast_path(x):
            into = {"grad_into": slab_xbc.parts()} if slab_xbc is not None else {}
            y, ssm_state = ssd_scan(x, delta, A, B, C, self.D.float(), chunk_size=self.cfg.chunk_size, **into)
        else:
            y, ssm_state = ssd_chunked(x, delta, A, B, C, self.D.float(), chunk_size=self.cfg.chunk_size)

        y = rearrange(y, "b t h p -> b t (h p)")
        # the diversity loss's gradient of the slots added inside the norm's backward kernel (not
        # by autograd: an add of the slots' size per layer), where nothing can change the slots
        # between the two (no forward hook on hook_slot_outputs)
        hook = self.hook_slot_outputs
        plain = isinstance(hook, nn.Identity) and not (hook._forward_hooks or hook._forward_pre_hooks)
        hold = self.norm.grad_holder(y, z) if plain and self.use_fast_path(x) else None
        y = self.norm(y, z, dz_into=slab and slab.part(0), dout_extra=hold)  # step 8
        slots = self.hook_slot_outputs(rearrange(y, "b t (h p) -> b t h p", p=self.head_dim))
        out = self.out_proj(rearrange(slots, "b t h p -> b t (h p)"))

        aux = {  # step 9, unweighted
            "balance": balance,
            "diversity": diversity_loss_fused(slots, grad_to=hold) if self.use_fast_path(x) else diversity_loss(slots),
        }
        state = None
        if return_state:
            state = {
                "conv": conv_state,
                "ssm": ssm_state,
                "u_sum": u.float().sum(dim=1),
                "n_tokens": torch.full((b,), t, device=u.device, dtype=torch.int64),
            }
        return MixerOutput(out, aux, state)

    # -- recurrent decoding --------------------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        ssm_dtype = torch.promote_types(dtype, torch.float32)  # the scan runs in >= fp32
        conv_dim = self.d_ssm + 2 * self.n_groups * self.d_state
        return {
            "conv": self.conv.init_state(batch_size, conv_dim, device, dtype),
            "ssm": torch.zeros(
                batch_size, self.n_active, self.head_dim, self.d_state, device=device, dtype=ssm_dtype
            ),
            "u_sum": torch.zeros(batch_size, self.cfg.d_model, device=device, dtype=torch.float32),
            "n_tokens": torch.zeros(batch_size, device=device, dtype=torch.int64),
        }

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        z, xBC, dt_raw = self._split(self.in_proj(u))
        xBC, conv_state = self.conv.step(xBC, state["conv"])
        x, B, C = self._ssm_inputs(xBC)
        # the running mean INCLUDES the current token, exactly as in forward
        u_sum = state["u_sum"] + u.float()
        n_tokens = state["n_tokens"] + 1
        r = u.float() - u_sum / n_tokens[:, None].float()
        r_proj = None
        if self.n_experts > 0:  # with Q = 0 the scores would only feed L_balance: not computed here
            with torch.autocast(u.device.type, enabled=False):
                r_proj = F.linear(r, self._router_weights()[0].float())
        delta, _, _, _ = self._route(r_proj, dt_raw)
        A = -torch.exp(self.A_log.float())
        y, ssm_state = ssd_step(state["ssm"], x, delta, A, B, C, self.D.float())
        y = self.norm(rearrange(y, "b h p -> b (h p)"), z)
        new_state = {"conv": conv_state, "ssm": ssm_state, "u_sum": u_sum, "n_tokens": n_tokens}
        return self.out_proj(y), new_state

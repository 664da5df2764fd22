"""Autograd op and public function of the Triton selective scan (kernels in `kernel.py`; the
forward layouts other than the default "split", for the benchmark's sweep, in `sweep_kernels.py`).

    selective_scan(u, delta, A, B, C, D=None, initial_state=None, chunk_size=32,
                   delta_bias=None, delta_softplus=False) -> (y, final_state)

Shapes (the contract of `reference.selective_scan_chunked`):
    u, delta: (batch, seqlen, channels), delta after softplus
    A: (channels, dstate), negative          B, C: (batch, seqlen, dstate)
    D: (channels,) or None                   initial_state: (batch, channels, dstate) or None
    -> y: (batch, seqlen, channels) in u's dtype; final_state: (batch, channels, dstate) fp32

All arithmetic is fp32 (the scan has no matrix products); inputs are read in their dtype.
`chunk_size` is accepted for the contract; the kernels' time tiles are set in CONFIG. The
forward kernel is CONFIG["fwd"]["layout"] ("tcn", "tnc", "seq" or "split"); the benchmark's
--sweep-fwd times all of them (and their launch parameters). Every forward stores the states
that the backward reads when gradients are needed.

delta_softplus (delta_bias (channels,) or None): the scan uses softplus(delta + delta_bias),
computed in fp32, as mamba_ssm's selective_scan_fn: Mamba's time step, whose pre-activation is
a bf16 matrix product. The split kernels compute it per token and return the gradient of the
pre-activation in delta's dtype (the bias's in its own), so that no fp32 (batch, seqlen,
channels) time step is written, saved or differentiated outside; the forward without a
gradient (evaluation) too, which then reads the bf16 pre-activation instead of an fp32 time step
(H200: 0.58 -> 0.33 ms at Mamba-370M's shape, docs/benchmarks.md section 11). Other layouts: the same
function in torch before the kernels.
"""

from __future__ import annotations

import os

import torch
import triton
from torch import Tensor

from .._buffers import empty as _empty
from .kernel import LOG2E, selective_scan_bwd_split_kernel, selective_scan_fwd_split_kernel
from .reference import delta_activation
from .sweep_kernels import (
    selective_scan_bwd_kernel,
    selective_scan_fwd_kernel,
    selective_scan_fwd_seq_kernel,
    selective_scan_fwd_tnc_kernel,
)

# Launch parameters (tuned on an H100 by benchmarks/selective_scan.py; docs/benchmarks.md).
CONFIG = {
    # layout "tcn": tile (time, channel, state); "tnc": (time, state, channel); "seq": one token
    # at a time with the states in-thread, launched with "fwd_seq" (these three: sweep_kernels.py)
    # H100 sweep (docs/benchmarks.md): seq 0.537 ms (BLOCK_T 4) / 0.507 (BLOCK_T 8, but that one
    # spills once the training forward stores states), tcn 0.603, tnc 0.672, split 0.267 (fourth round) -> split
    "fwd": {"BLOCK_T": 8, "BLOCK_C": 32, "num_warps": 4, "layout": "split"},
    # BLOCK_T: tokens per unrolled tile (the next tile's inputs load during it); BLOCK_C =
    # 32 * num_warps keeps one channel per lane; bc_fp32: convert B and C to fp32 before the
    # kernel (two small extra kernels), since every lane converts all of B_t and C_t per token
    "fwd_seq": {"BLOCK_T": 4, "BLOCK_C": 32, "num_warps": 1, "bc_fp32": False},
    # layout "split": seq with each channel's N states split over NG lanes (N / NG per lane), NG
    # times more warps; 32 / NG * num_warps channels per program. pairs: bf16 B, C read as
    # uint32 pairs of states (used where N and the strides are even); bc_fp32: as in fwd_seq
    # (each lane converts N / NG states of B_t and C_t per token: 8 of ~45 instructions at NG 4,
    # sm_90a). NBUF: a ring of NBUF tile buffers, tile k + NBUF - 1 loading while tile k computes.
    # shfl_ud: bf16 u and delta read one token per lane group, NG tokens per load, handed to the
    # other groups by a shuffle (not in the interpreter). "fwd_split" runs without autograd,
    # "fwd_split_train" for the training forward (stores the states for the backward). H100
    # (`benchmarks.selective_scan`, ncu; docs/benchmarks.md, fourth round): without autograd
    # BLOCK_T 16 + shfl_ud 0.267 ms (BLOCK_T 8 0.277); training forward BLOCK_T 8 0.317 ms
    # (BLOCK_T 16 + shfl_ud: 167 registers, 0.419).
    "fwd_split": {"BLOCK_T": 16, "NG": 4, "num_warps": 1, "pairs": True, "bc_fp32": False, "NBUF": 2,
                  "shfl_ud": True},
    "fwd_split_train": {"BLOCK_T": 8, "NG": 4, "num_warps": 1, "pairs": True, "bc_fp32": False, "NBUF": 2},
    # backward, layout "split" (`selective_scan_bwd_split_kernel`): the split forward's lanes, NG
    # per channel with N / NG states each, CT channels per lane (32 / NG * CT * num_warps channels
    # per program), time walked in reverse in tiles of BLOCK_T tokens (also the tile of the
    # states the forward stores); recompute_a: the backward recomputes the decays instead of
    # keeping them in registers; prefetch: the next tile's inputs load while a tile computes.
    # Layout "tile" (`selective_scan_bwd_kernel`, the first round's): (BLOCK_T, BLOCK_C, N)
    # tiles solved by associative scans, launched with BLOCK_C and tile_warps. rs: the split
    # kernel's sums over lanes as reduce-scatters (where its shapes allow, see the kernel).
    "bwd": {"layout": "split", "BLOCK_T": 8, "NG": 4, "CT": 2, "num_warps": 1, "pairs": True, "recompute_a": True,
            "prefetch": True, "rs": True, "BLOCK_C": 16, "tile_warps": 2},
}

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (debugging)


def _pow2(n: int) -> int:
    return max(2, triton.next_power_of_2(n))


def _forward(u, delta, A2, B, C, D, init, store_states: bool, block_t: int, config=None, launch=None, act=None):
    """block_t: the time tile of the kernel that reads `states` (the state entering every tile).
    config: a CONFIG-like dict (default CONFIG). launch(kernel, grid) -> the function that is
    called with the kernel's arguments (default kernel[grid]); the benchmark passes one that only
    compiles (kernel.warmup: its candidates compile in parallel) or one that records them.
    act: None, or (bias fp32 (channels,) or None) for softplus(delta + bias) in the split kernel."""
    config = CONFIG if config is None else config
    launch = launch or (lambda kernel, grid: kernel[grid])
    b, t, ch = u.shape
    n = A2.shape[1]
    ntiles = triton.cdiv(t, block_t)
    y = _empty(*u.shape, like=u)
    final = _empty(b, ch, n, like=u, dtype=torch.float32)
    states = _empty(b, ntiles, ch, n, like=u, dtype=torch.float32) if store_states else None
    layout = config["fwd"].get("layout", "tcn")
    seq = config["fwd_seq"] if layout == "seq" else None
    if seq is not None:
        A2 = A2.t().contiguous()  # (N, CH): channels last, like every tile of the seq kernel
    split = _split_config(config, store_states) if layout == "split" else None
    if (layout == "seq" and config["fwd_seq"].get("bc_fp32")) or (split is not None and split.get("bc_fp32")):
        B, C = B.float(), C.float()
    args = (
        u, delta, A2, B, C, D if D is not None else A2, init if init is not None else final,
        y, final, states if states is not None else final,
        t, ch, n, ntiles,
        *u.stride(), *delta.stride(), *B.stride(), *C.stride(), *y.stride(),
    )
    flags = dict(BLOCK_N=_pow2(n), HAS_D=D is not None, HAS_INIT=init is not None, STORE_STATES=store_states)
    if layout == "split":
        _forward_split(split, args, flags, B, C, n, ch, b, store_states, block_t, launch, act)
        return y, final, states
    assert act is None, "the time step's activation is in the split kernels only (_uses_kernel_act)"
    if seq is not None:
        seq_t = seq["BLOCK_T"]
        state_t = block_t if store_states else seq_t  # (unused without states: one compiled variant)
        assert seq_t % state_t == 0 or state_t % seq_t == 0, (
            f"fwd_seq BLOCK_T {seq_t} and the state tile {state_t} must divide one another")
        block_c = min(seq["BLOCK_C"], _pow2(ch))
        launch(selective_scan_fwd_seq_kernel, (triton.cdiv(ch, block_c), b))(
            *args, BLOCK_T=seq_t, BLOCK_C=block_c, STATE_T=state_t, **flags, num_warps=seq["num_warps"],
        )
        return y, final, states
    cfg = config["fwd"]
    block_c = min(cfg["BLOCK_C"], _pow2(ch))
    kernel = selective_scan_fwd_tnc_kernel if layout == "tnc" else selective_scan_fwd_kernel
    launch(kernel, (triton.cdiv(ch, block_c), b))(
        *args, BLOCK_T=block_t, BLOCK_C=block_c, **flags, num_warps=cfg["num_warps"],
    )
    return y, final, states


def _split_config(config: dict, store_states: bool) -> dict:
    """The split kernel's launch parameters: CONFIG["fwd_split"] without autograd, and
    CONFIG["fwd_split_train"] (falling back to "fwd_split") for the training forward, which also
    stores the states: the two have different best tiles on an H100."""
    return config.get("fwd_split_train", config["fwd_split"]) if store_states else config["fwd_split"]


def _forward_split(sp, args, flags, B, C, n, ch, b, store_states, block_t, launch, act=None):
    """Launch `selective_scan_fwd_split_kernel` with sp = `_split_config(...)` (the rest: _forward's)."""
    block_n = flags["BLOCK_N"]
    ng = min(sp["NG"], block_n)
    assert ng in (1, 2, 4, 8, 16, 32) and 32 % ng == 0, f"fwd_split NG must be a power of 2 <= 32, got {ng}"
    block_c = 32 // ng * sp["num_warps"]
    split_t = sp["BLOCK_T"]
    state_t = block_t if store_states else split_t
    assert split_t % state_t == 0 or state_t % split_t == 0, (
        f"fwd_split BLOCK_T {split_t} and the state tile {state_t} must divide one another")
    pairs = sp.get("pairs", True) and block_n // ng >= 2 and all(_pairs_ok(x, n) for x in (B, C))
    launch(selective_scan_fwd_split_kernel, (triton.cdiv(ch, block_c), b))(
        *args, BLOCK_T=split_t, BLOCK_C=block_c, NG=ng, STATE_T=state_t, PAIRS=pairs, EVEN_C=ch % block_c == 0,
        NBUF=sp.get("NBUF", 2), SHFL_UD=_shfl_ud(sp, args[0], args[1], ng, split_t),
        **_act_args(act), ASM=not _INTERPRET, **flags, num_warps=sp["num_warps"],
    )


def _act_args(act, dbias_part=None) -> dict:
    """The split kernels' arguments of the time step's activation (see _forward's act)."""
    if act is None:
        return {}
    bias = act[0]
    out = dict(SOFTPLUS=True, HAS_BIAS=bias is not None)
    if bias is not None:
        out["db_ptr"] = bias
        if dbias_part is not None:
            out["ddb_part_ptr"] = dbias_part
    return out


def _uses_kernel_act(config=None) -> bool:
    """Whether CONFIG's forward and backward are the split kernels (which take delta_softplus)."""
    config = CONFIG if config is None else config
    return config["fwd"].get("layout") == "split" and config["bwd"].get("layout", "split") == "split"


def _shfl_ud(sp: dict, u: Tensor, delta: Tensor, ng: int, block_t: int) -> bool:
    """Whether the split kernel reads u and delta one token per lane group and shuffles them
    (its config's "shfl_ud"): bf16 u and delta, NG > 1 dividing BLOCK_T; not in Triton's
    interpreter (inline PTX)."""
    return (sp.get("shfl_ud", False) and not _INTERPRET and ng > 1 and block_t % ng == 0
            and u.dtype == torch.bfloat16 and delta.dtype == torch.bfloat16)


def _pairs_ok(x: Tensor, n: int) -> bool:
    """Whether the split kernel can read x (batch, seqlen, N) as uint32 pairs of bf16 states."""
    return (x.dtype == torch.bfloat16 and n % 2 == 0 and x.stride(2) == 1 and x.stride(0) % 2 == 0
            and x.stride(1) % 2 == 0 and x.data_ptr() % 4 == 0)


class SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, initial_state, delta_bias, softplus):
        A2 = (A.float() * LOG2E).contiguous()
        D32 = D.float().contiguous() if D is not None else None
        init = initial_state.float().contiguous() if initial_state is not None else None
        bias = delta_bias.float().contiguous() if delta_bias is not None else None
        act = (bias,) if softplus else None
        # the forward stores the state entering every time tile when a backward will follow
        # (the tile size of the backward: it recomputes h inside each tile from that state)
        store = any(ctx.needs_input_grad)
        block_t = CONFIG["bwd" if store else "fwd"]["BLOCK_T"]
        y, final, states = _forward(u, delta, A2, B, C, D32, init, store, block_t, act=act)
        ctx.save_for_backward(u, delta, A2, B, C, D32, states, bias)
        ctx.meta = (A.dtype, None if D is None else D.dtype, None if initial_state is None else initial_state.dtype,
                    block_t, None if delta_bias is None else delta_bias.dtype, softplus)
        ctx.set_materialize_grads(False)
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        u, delta, A2, B, C, D32, states, bias = ctx.saved_tensors
        A_dtype, D_dtype, init_dtype, block_t, bias_dtype, softplus = ctx.meta
        assert CONFIG["bwd"]["BLOCK_T"] == block_t, "CONFIG['bwd']['BLOCK_T'] changed between forward and backward"
        dy = dy if dy is not None else torch.zeros_like(u)
        dfinal = dfinal.float().contiguous() if dfinal is not None else None
        du, ddelta, dA, dB, dC, dD, dinit, dbias = _backward(u, delta, A2, B, C, D32, states, dy, dfinal,
                                                             init_dtype is not None, block_t,
                                                             act=(bias,) if softplus else None)
        return (
            du, ddelta, dA.to(A_dtype), dB.to(B.dtype), dC.to(C.dtype), dD.to(D_dtype) if dD is not None else None,
            dinit.to(init_dtype) if dinit is not None else None, dbias.to(bias_dtype) if dbias is not None else None,
            None,
        )


def _backward(u, delta, A2, B, C, D32, states, dy, dfinal, need_dinit: bool, block_t: int, config=None, launch=None,
              act=None):
    """The backward kernel of CONFIG["bwd"]["layout"] and the sums of its partials: (du, ddelta,
    dA, dB, dC, dD or None, dinit or None, dbias or None), dA..dbias in fp32. config / launch /
    act as in _forward (ddelta: the gradient of the pre-activation with act)."""
    cfg = (CONFIG if config is None else config)["bwd"]
    launch = launch or (lambda kernel, grid: kernel[grid])
    b, t, ch = u.shape
    n = A2.shape[1]
    ntiles = states.shape[1]
    block_n = _pow2(n)
    split = cfg.get("layout", "split") == "split"
    if split:
        ng = min(cfg["NG"], block_n)
        assert ng in (1, 2, 4, 8, 16, 32), f"bwd NG must be a power of 2 <= 32, got {ng}"
        block_c = 32 // ng * cfg["CT"] * cfg["num_warps"]
    else:
        block_c = min(cfg["BLOCK_C"], _pow2(ch))
    ncb = triton.cdiv(ch, block_c)
    # du and ddelta as the two planes of one buffer, dB and dC's partials too: the split kernel's
    # reduce-scatters store both of a pair through one pointer (the plane's offset selected per lane)
    if u.dtype == delta.dtype:
        du, ddelta = _empty(2, *u.shape, like=u).unbind(0)
    else:
        du, ddelta = _empty(*u.shape, like=u), _empty(*delta.shape, like=delta)
    dB_part, dC_part = _empty(2, ncb, b, t, n, like=u, dtype=torch.float32).unbind(0)
    dA_part = _empty(b, ch, n, like=u, dtype=torch.float32)
    dD_part = _empty(b, ch, like=u, dtype=torch.float32) if D32 is not None else dA_part
    dinit = _empty(b, ch, n, like=u, dtype=torch.float32) if need_dinit else dA_part
    has_bias = act is not None and act[0] is not None
    dbias_part = None
    # the split kernel's offsets from du to ddelta and from the dB to the dC partials (the tile
    # kernel takes no such arguments)
    planes = (b * t * ch, ncb * b * t * n) if split else ()
    args = (
        u, delta, A2, B, C, D32 if D32 is not None else A2, states, dy, dfinal if dfinal is not None else dA_part,
        du, ddelta, dB_part, dC_part, dA_part, dD_part, dinit,
        t, ch, n, ntiles, *planes,
        *u.stride(), *delta.stride(), *B.stride(), *C.stride(), *dy.stride(), *du.stride(), *ddelta.stride(),
    )
    flags = dict(BLOCK_T=block_t, BLOCK_C=block_c, BLOCK_N=block_n, HAS_D=D32 is not None,
                 HAS_DFINAL=dfinal is not None, STORE_DINIT=need_dinit)
    if split:
        pairs = cfg.get("pairs", True) and block_n // ng >= 2 and all(_pairs_ok(x, n) for x in (B, C))
        rs = cfg.get("rs", True)
        rs_g = rs and u.dtype == delta.dtype and 2 * cfg["CT"] >= ng
        if has_bias:  # the bias's partial sums: per lane group, or one (the reduce-scatter's) per channel
            dbias_part = _empty(b, 1 if rs_g else ng, ch, like=u, dtype=torch.float32)
        rs_c = rs and cfg["num_warps"] == 1 and 2 * (block_n // ng) >= 32 // ng
        launch(selective_scan_bwd_split_kernel, (ncb, b))(
            *args, NG=ng, CT=cfg["CT"], PAIRS=pairs, EVEN_C=ch % block_c == 0,
            RECOMPUTE_A=cfg.get("recompute_a", True), PREFETCH=cfg.get("prefetch", True),
            RS_G=rs_g, RS_C=rs_c, ASM=not _INTERPRET, **_act_args(act, dbias_part), **flags,
            num_warps=cfg["num_warps"],
        )
    else:
        assert act is None, "the time step's activation is in the split kernels only (_uses_kernel_act)"
        launch(selective_scan_bwd_kernel, (ncb, b))(*args, **flags, num_warps=cfg.get("tile_warps", 2))
    return (du, ddelta, dA_part.sum(0), dB_part.sum(0), dC_part.sum(0),
            dD_part.sum(0) if D32 is not None else None, dinit if need_dinit else None,
            dbias_part.sum((0, 1)) if dbias_part is not None else None)


def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
    initial_state: Tensor | None = None, chunk_size: int = 32, delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> tuple[Tensor, Tensor]:
    """Triton selective scan; shapes in the module docstring. chunk_size, delta_bias,
    delta_softplus: see there."""
    b, t, ch = u.shape
    assert u.is_cuda or _INTERPRET, "the Triton selective scan needs CUDA tensors (kernels.selective_scan falls back to the reference)"
    assert delta.shape == u.shape, f"delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}"
    assert A.dim() == 2 and A.shape[0] == ch, f"A must be (channels, dstate) with channels = {ch}, got {tuple(A.shape)}"
    n = A.shape[1]
    assert B.shape == C.shape == (b, t, n), f"B, C must be (batch, seqlen, dstate) = {(b, t, n)}; got B {tuple(B.shape)}, C {tuple(C.shape)}"
    assert D is None or D.shape == (ch,), f"D must be (channels,) = ({ch},), got {tuple(D.shape)}"
    assert delta_bias is None or delta_bias.shape == (ch,), (
        f"delta_bias must be (channels,) = ({ch},), got {tuple(delta_bias.shape)}")
    del chunk_size
    if (delta_bias is not None or delta_softplus) and not (delta_softplus and _uses_kernel_act()):
        # in torch before the kernels: a bias alone, a layout without the activation
        delta, delta_bias, delta_softplus = delta_activation(delta, delta_bias, delta_softplus), None, False
    return SelectiveScan.apply(u, delta, A, B, C, D, initial_state, delta_bias, bool(delta_softplus))

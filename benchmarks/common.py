"""Shared helpers of the GPU benchmarks: timing, floors, environment, tables.

Timing: `triton.testing.do_bench` (CUDA events), median of the repeats, warm-up excluded.
Floors: the measured ceilings of the lent H100 (docs/design.md "GPU reference numbers"): bf16 matrix
products 724 TFLOP/s, device-to-device copy 3.0 TB/s (bytes read + written); the special-function
unit (exp2) 16 results / clock / SM.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone

import torch

PEAK_BF16_FLOPS = 724e12
PEAK_BYTES = 3.0e12
MUFU_PER_CLK_SM = 16


def warm_gpu(seconds: float = 2.0) -> None:
    """Run matrix products for a while so the clocks are up before the first timing (a cold GPU
    made the first case of a run read ~1.7x slow on the lent H100)."""
    import time

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ a
        torch.cuda.synchronize()


def bench(fn, warmup_ms: float = 25, rep_ms: float = 200, grad_to_none=None) -> float:
    """Median milliseconds of fn() (CUDA events), warm-up excluded."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none, return_mode="median")


def bench_graph(fn, rep_ms: float = 200) -> float:
    """Median milliseconds of fn() captured once as a CUDA graph and replayed (no host launch
    cost: what a kernel sequence costs inside the trainer's graph-captured step)."""
    import triton.testing

    with torch.cuda.stream(torch.cuda.Stream()):
        return triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median")


def kernel_ms(fn, iters: int = 20, grad_to_none=None) -> float:
    """GPU milliseconds per fn() of the kernels it launches, summed (torch.profiler over `iters`
    calls after two warm-up calls): the time the same kernels take inside the trainer's
    graph-captured step, where no host launch gaps sit between them. `bench` times the wall
    clock between CUDA events, which for kernels of tens of microseconds is mostly the host's
    launch cost (the autograd Function, the Python launcher). grad_to_none: tensors whose .grad
    is reset before each call (else the backward's accumulation into .grad is timed too)."""
    from torch.profiler import ProfilerActivity, profile

    if grad_to_none:
        inner = fn

        def fn():
            for t in grad_to_none:
                t.grad = None
            inner()

    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA" and not e.key.startswith("## ")]
    return sum(e.self_device_time_total for e in kernels) / 1e3 / iters


_COPY_RATE: list[float] = []


def copy_rate() -> float:
    """Bytes (read + written) per second of a device-to-device copy of 1 GiB on this GPU, median
    of 20 (measured once per process): the memory ceiling behind every memory floor, for the GPU
    the benchmark runs on (PEAK_BYTES is the H100's)."""
    if not _COPY_RATE:
        a = torch.empty(2**29, device="cuda", dtype=torch.bfloat16)
        b = torch.empty_like(a)
        ms = bench(lambda: b.copy_(a))
        _COPY_RATE.append(2 * a.numel() * a.element_size() / (ms * 1e-3))
        del a, b
    return _COPY_RATE[0]


def bench_slow(fn, repeats: int = 3) -> float:
    """Median ms of a slow fn (seconds per call): one warm-up, then `repeats` timed calls."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def mufu_rate() -> float:
    """exp2 results per second of the whole device at its maximum SM clock."""
    props = torch.cuda.get_device_properties(0)
    clock_hz = _max_sm_clock_mhz() * 1e6
    return props.multi_processor_count * MUFU_PER_CLK_SM * clock_hz


def _max_sm_clock_mhz() -> float:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        return float(out)
    except Exception:
        return 1980.0  # H100 SXM


def environment() -> dict:
    import triton

    env = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(sms=p.multi_processor_count, mem_gib=round(p.total_memory / 2**30, 1), max_sm_clock_mhz=_max_sm_clock_mhz())
    try:
        import fla

        env["fla"] = fla.__version__
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        env["fla"] = f"unavailable ({type(e).__name__})"
    return env


def table(rows: list[dict], cols: list[str]) -> str:
    """A Markdown table of the given columns."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def save(name: str, payload: dict) -> None:
    """Write payload as JSON to $OUT/<name>.json (or results/benchmarks/ when $OUT is unset)."""
    out = os.environ.get("OUT") or os.path.join("results", "benchmarks")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(payload, f, indent=1, default=str)

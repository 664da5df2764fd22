"""One micro-batch's forward and backward as a CUDA graph (`train.cuda_graph`).

A model step of this code base launches a few hundred small kernels per layer; at the paper's
width the eager step is host-bound for HADES (docs/benchmarks.md, "Training throughput"): the
host spends longer issuing the kernels than the GPU spends running them. Capturing the
micro-step once and replaying it takes the host out of the loop.

What is captured: the forward under autocast, the loss (next-token cross-entropy plus the
model's auxiliary losses), the backward, and the step's loss statistics. What is not: the
optimizer, the gradient clipping and the schedule (a handful of fused kernels each, run
eagerly, so the optimizer, its checkpoint format and the learning-rate schedule are exactly
those of the eager trainer), and the host-side data loading.

How accumulation works: every parameter's `.grad` is a view into one flat buffer per dtype,
set before the first step and never replaced; the backward adds into it in place (autograd's
AccumulateGrad does so when `.grad` exists), so one captured graph serves every micro-batch of
a step and `zero_grad()` is one memset per buffer. The statistics are added into a static
fp64 vector the same way. The eager warm-up steps (Triton compilation and autotuning, cuBLAS
workspaces, the HADES router's torch.compile) run the same function on a side stream, as
PyTorch's CUDA-graph notes require, and accumulate into the same buffers, so a run's numbers
do not depend on where the capture happened (up to the run-to-run noise of kernels that use
atomics).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger("hades.train")

# fn(w) -> (stats, names): forward + loss + backward of one micro-batch `w` (B, T + 1) of token
# ids; stats = fp64 [loss, ce, aux...] (detached), names = the aux losses' names in that order
MicroStep = Callable[[torch.Tensor], tuple[torch.Tensor, list[str]]]


class GraphedMicroStep:
    """Runs `micro_step` eagerly for the first `warmup` micro-batches, then captures it once
    and replays the graph for every later micro-batch (same shape and dtype as the first).

    Per optimizer step: `zero_grad()`, then `__call__(w)` for each micro-batch, then
    `stats()` -> (summed statistics, aux names). If the capture fails (an op that syncs with
    the host or is not capturable) and `strict` is False, it logs why and stays eager.
    """

    def __init__(self, model: torch.nn.Module, micro_step: MicroStep, device: torch.device,
                 warmup: int = 3, strict: bool = False, label: str = ""):
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        self.micro_step, self.device, self.warmup, self.strict, self.label = micro_step, device, warmup, strict, label
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.flat: list[torch.Tensor] = []
        for dtype in sorted({p.dtype for p in self.params}, key=str):
            group = [p for p in self.params if p.dtype == dtype]
            flat = torch.zeros(sum(p.numel() for p in group), dtype=dtype, device=device)
            offset = 0
            for p in group:
                p.grad = flat[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
            self.flat.append(flat)
        self._grads = [p.grad for p in self.params]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed: str | None = None
        self.n_eager = 0
        self.n_replays = 0
        self._input: torch.Tensor | None = None
        self._stats: torch.Tensor | None = None
        self._graph_stats: torch.Tensor | None = None
        self._names: list[str] | None = None
        self._side = torch.cuda.Stream(device)

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def zero_grad(self) -> None:
        self._check_grads()
        for flat in self.flat:
            flat.zero_()
        if self._stats is not None:
            self._stats.zero_()

    def stats(self) -> tuple[torch.Tensor, list[str]]:
        """The statistics summed over this step's micro-batches so far, and the aux names."""
        return self._stats.clone(), list(self._names)

    def __call__(self, w: torch.Tensor) -> None:
        if self.graph is None and self.failed is None and self.n_eager >= self.warmup:
            self._capture(w)
        if self.graph is not None:
            self._input.copy_(w, non_blocking=True)
            self.graph.replay()
            self._stats += self._graph_stats
            self.n_replays += 1
            return
        current = torch.cuda.current_stream(self.device)
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            stats, names = self.micro_step(w.to(self.device, non_blocking=True))
            self._accumulate(stats, names)
        current.wait_stream(self._side)
        self.n_eager += 1

    def _accumulate(self, stats: torch.Tensor, names: list[str]) -> None:
        if self._stats is None:
            self._stats, self._names = torch.zeros_like(stats), names
        if names != self._names:
            raise RuntimeError(f"the auxiliary losses changed between micro-batches: {self._names} -> {names}")
        self._stats += stats

    def _check_grads(self) -> None:
        if any(p.grad is not g for p, g in zip(self.params, self._grads)):
            raise RuntimeError(
                "a parameter's .grad was replaced (zero_grad(set_to_none=True)?); with train.cuda_graph the "
                "gradients live in fixed buffers that the captured backward writes"
            )

    def _capture(self, w: torch.Tensor) -> None:
        self._input = torch.empty_like(w, device=self.device)
        self._input.copy_(w)
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()  # the warm-up's cached activations: the graph has its own pool
        try:
            with torch.cuda.graph(graph):
                # recorded, not run: the replays below do the work
                self._graph_stats, names = self.micro_step(self._input)
        except Exception as e:  # noqa: BLE001 -- any failure to capture means "stay eager"
            self.failed = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            self._graph_stats = None
            torch.cuda.synchronize(self.device)
            if self.strict:
                raise RuntimeError(f"{self.label}: could not capture the training step as a CUDA graph ({self.failed}); "
                                   f"set train.cuda_graph: false (or auto) to train eagerly") from e
            log.warning("%s: could not capture the training step as a CUDA graph (%s); training eagerly",
                        self.label, self.failed)
            return
        if names != self._names:
            raise RuntimeError(f"the auxiliary losses changed under capture: {self._names} -> {names}")
        self.graph = graph
        log.info("%s: training step captured as a CUDA graph after %d eager micro-batches", self.label, self.n_eager)

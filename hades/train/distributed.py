"""Process-group set-up for DDP under torchrun, and the few collectives the loop needs.

torchrun (`--standalone --nproc_per_node N`) exports RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous address; a plain `python -m hades.train` has none of them and runs as rank 0 of 1
without a process group. Backend: NCCL when training on CUDA, gloo on CPU (CI, the torchrun
equivalence test).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """train.device: auto -> cuda:<local_rank> if CUDA is available, else cpu."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but no CUDA device is available (set train.device: auto or cpu)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group when launched by torchrun; else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size == 1:
        return DistInfo(), dev
    initialized_here = False
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        # generous timeout: rank 0 alone writes checkpoints and the MLflow run while others wait
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
        initialized_here = True
    return DistInfo(rank, world_size, local_rank, initialized_here), dev


def shutdown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_int(info: DistInfo, value: int, device: torch.device) -> int:
    """Rank 0's value on every rank."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def all_reduce_(info: DistInfo, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum or max); identity in a single process."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t


def gather_objects(info: DistInfo, obj):
    """Every rank's `obj`, in rank order (a list of one in a single process)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out

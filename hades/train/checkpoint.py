"""Resumable training checkpoints: atomic, checksummed, and loaded without unpickling code.

Layout of one checkpoint, `<root>/step_<8 digits>/` (root = results/checkpoints/{model}):

    model.safetensors   model weights (safetensors: a format that cannot hold code)
    optimizer.pt        AdamW state_dict (tensors and plain numbers only)
    trainer.pt          step, tokens, scheduler state, RNG states of every rank, resume key
    config.json         the pipeline config and the resolved experiment (what was trained)
    metrics.jsonl       the metric records of steps 1..step (restored on resume, see loop.py)
    SHA256SUMS          sha256 of every file above, written last

Atomicity: everything is written into a hidden temporary directory in the same root, each
file fsync'ed, then the directory is renamed to its final name and the root fsync'ed (a step
saved again first moves its old directory aside, `replace_dir`). A crash at any point leaves
either the previous set of checkpoints or the new complete one; a half-written `.tmp-*`
directory is never mistaken for a checkpoint and is swept on the next start. The checksums
catch what atomic rename cannot: corruption after the fact (a truncated copy, a bad disk, a
file edited by hand).

Safety: `.pt` files go through `torch.load(weights_only=True)`, whose unpickler only rebuilds
tensors and plain containers. A checkpoint holding any other pickled object is refused
(CheckpointError), never executed.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from hades.io import fsync_path, sha256_file

log = logging.getLogger("hades.train")

FORMAT_VERSION = 1
CHECKSUM_FILE = "SHA256SUMS"
FILES = ("model.safetensors", "optimizer.pt", "trainer.pt", "config.json", "metrics.jsonl")
_STEP_RE = re.compile(r"^step_(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint that is incomplete, corrupted, or unsafe to load. The message says which
    file and why."""


@dataclass
class LoadedCheckpoint:
    """The verified, deserialised content of one checkpoint (weights are applied later)."""

    path: Path
    step: int
    trainer: dict[str, Any]
    optimizer: dict[str, Any]
    config: dict[str, Any]

    @property
    def model_file(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every `step_*` directory under root, oldest first. Says nothing about
    their integrity (see `verify`)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


# -- low-level file helpers ----------------------------------------------------------------


def remove_tree(path: Path) -> None:
    """Delete a directory by first renaming it to a hidden name, so that a crash mid-delete
    never leaves a partial `step_*` directory behind."""
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


_HIDDEN_RE = re.compile(r"^\.(tmp|old)-(step_\d{8})-")


def sweep_incomplete(root: str | Path) -> None:
    """Remove leftovers of interrupted writes/deletes (`.tmp-*`, `.trash-*`, `.old-*`), first
    restoring a step that a crash inside `replace_dir` left without its `step_*` directory: its
    new copy (`.tmp-`, complete: checksums verified) if there is one, else its old one (`.old-`).
    Call only when no other process writes this root (rank 0, at start-up)."""
    root = Path(root)
    if not root.is_dir():
        return
    orphans: dict[str, list[Path]] = {}
    for p in root.iterdir():
        m = _HIDDEN_RE.match(p.name)
        if m and p.is_dir() and not (root / m.group(2)).exists():
            orphans.setdefault(m.group(2), []).append(p)
    for name, copies in sorted(orphans.items()):
        # the new copy before the old one; among several (crashed writers), the newest first
        for p in sorted(copies, key=lambda c: (not c.name.startswith(".tmp-"), -c.stat().st_mtime_ns, c.name)):
            try:
                verify(p)
            except CheckpointError:
                continue
            os.rename(p, root / name)
            fsync_path(root)
            log.warning("%s: restored %s from %s (a crash while it was being replaced)", root, name, p.name)
            break
    for p in root.iterdir():
        if p.name.startswith((".tmp-", ".trash-", ".old-")):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def torch_load_safe(path: str | Path, map_location: Any = "cpu") -> Any:
    """torch.load restricted to tensors and plain data; a pickled object is a CheckpointError."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: contains a pickled Python object, refusing to load it (checkpoints may hold "
            f"only tensors and plain data; torch.load(weights_only=True) said: {first})"
        ) from e


# -- RNG state -----------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain data (weights_only-loadable)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


# -- save ----------------------------------------------------------------------------------


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    config: dict[str, Any],
    metrics_file: str | Path | None,
    keep: int,
) -> Path:
    """Atomically write checkpoint `step` under root, then keep only the newest `keep`.

    `trainer_state` must hold tensors and plain data only (it is loaded with weights_only).
    Returns the final directory.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = step_dir_name(step)
    tmp = root / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"format_version": FORMAT_VERSION, "step": step, **trainer_state}, tmp / "trainer.pt")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
        if metrics_file is not None and Path(metrics_file).exists():
            shutil.copyfile(metrics_file, tmp / "metrics.jsonl")
        else:
            (tmp / "metrics.jsonl").write_bytes(b"")
        sums = []
        for fname in FILES:
            fsync_path(tmp / fname)
            sums.append(f"{sha256_file(tmp / fname)}  {fname}\n")
        with open(tmp / CHECKSUM_FILE, "w") as f:
            f.writelines(sums)
            f.flush()
            os.fsync(f.fileno())
        fsync_path(tmp)
        final = root / name
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune(root, keep)
    return final


def replace_dir(tmp: Path, final: Path) -> None:
    """Rename the complete checkpoint `tmp` to `final`. A `final` that exists (a re-save of the
    same step: after a resume, or of a quarantined step) cannot be replaced by one rename (a
    directory renames only onto an empty one), and deleting it first would leave, after a crash
    between the delete and the rename, no `step_*` of that step, only the new copy under its
    hidden name, which `sweep_incomplete` would then delete. So the old one is renamed aside to
    `.old-<name>-*` first: at every instant `final` or a complete hidden copy that
    `sweep_incomplete` restores exists."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
    os.rename(tmp, final)
    fsync_path(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prune(root: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    ckpts = list_checkpoints(root)
    for _, path in ckpts[: max(0, len(ckpts) - keep)]:
        remove_tree(path)


# -- verify / load -------------------------------------------------------------------------


def verify(path: str | Path) -> None:
    """Raise CheckpointError unless every file is present and matches SHA256SUMS."""
    path = Path(path)
    sums_file = path / CHECKSUM_FILE
    if not sums_file.is_file():
        raise CheckpointError(f"{path}: no {CHECKSUM_FILE} (incomplete checkpoint)")
    expected: dict[str, str] = {}
    for line in sums_file.read_text().splitlines():
        parts = line.split()
        if len(parts) != 2:
            raise CheckpointError(f"{sums_file}: malformed line {line!r}")
        expected[parts[1]] = parts[0]
    missing = [f for f in FILES if f not in expected]
    if missing:
        raise CheckpointError(f"{sums_file}: lists no checksum for {missing}")
    for fname, digest in expected.items():
        f = path / fname
        if not f.is_file():
            raise CheckpointError(f"{f}: missing")
        actual = sha256_file(f)
        if actual != digest:
            raise CheckpointError(
                f"{f}: sha256 mismatch (size {f.stat().st_size} bytes; expected {digest[:12]}…, "
                f"got {actual[:12]}…): truncated or corrupted"
            )


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> LoadedCheckpoint:
    """Verify checksums and deserialise the non-weight parts. Raises CheckpointError."""
    path = Path(path)
    verify(path)
    trainer = torch_load_safe(path / "trainer.pt", map_location)
    optimizer = torch_load_safe(path / "optimizer.pt", map_location)
    if not isinstance(trainer, dict) or trainer.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path / 'trainer.pt'}: not a format-{FORMAT_VERSION} trainer state")
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / 'config.json'}: not valid JSON ({e})") from e
    return LoadedCheckpoint(path=path, step=int(trainer["step"]), trainer=trainer, optimizer=optimizer, config=config)


def load_weights(ckpt: LoadedCheckpoint, model: nn.Module, device: Any = "cpu") -> None:
    """Load the safetensors weights into `model`, strictly: a missing, extra or misshapen tensor
    is a CheckpointError naming the checkpoint (its checksums verified, so the model code
    changed since it was written)."""
    from hades.models import CheckpointMismatchError
    from hades.models.lm import check_weights_match

    try:
        check_weights_match(model, ckpt.model_file, ckpt.path, fix=(
            f"it was written by other model code: move {ckpt.path.parent}/step_* aside to train "
            "from scratch, or check out the commit that wrote it"))
    except CheckpointMismatchError as e:
        raise CheckpointError(str(e)) from None
    load_model(model, str(ckpt.model_file), strict=True, device=str(device))


def latest_good(
    root: str | Path,
    quarantine: bool = True,
    map_location: Any = "cpu",
) -> LoadedCheckpoint | None:
    """The newest checkpoint under root that verifies and loads, or None.

    A checkpoint that fails (checksum, truncation, pickled object) is reported with a warning
    and, with `quarantine`, moved to `<root>/corrupt/` so that it is kept for inspection but
    never picked again; the next older one is tried.
    """
    for step, path in reversed(list_checkpoints(root)):
        try:
            ckpt = read_checkpoint(path, map_location)
        except CheckpointError as e:
            log.warning("checkpoint %s is unusable: %s", path, e)
            if quarantine:
                dest = Path(root) / "corrupt" / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
                dest.parent.mkdir(exist_ok=True)
                os.rename(path, dest)
                log.warning("moved it to %s; falling back to the previous checkpoint", dest)
            continue
        if ckpt.step != step:
            log.warning("checkpoint %s says step %d; skipping it", path, ckpt.step)
            continue
        return ckpt
    return None

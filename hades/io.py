"""File helpers of every stage: crash-safe writes, JSON, sha256, and the code's git revision.

Atomic writes: a file is written to a hidden temporary name in its own directory, flushed and
fsync'ed, renamed over the target (`os.replace`, atomic on POSIX) and the directory fsync'ed so
that the rename itself survives a power loss. A reader, or a job restarted after a kill, sees the
old content or the new one, never a torn mix; a writer that fails midway leaves the old file (or
none) and no temporary file. Used for checkpoints, run-id files, manifests, records and tables.

Standard library only: the Snakefile imports it while parsing, and `hades --help` must not pay
for torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

UNKNOWN = "unknown"  # git_info's commit when there is no repository (or no git)

_UMASK = os.umask(0)
os.umask(_UMASK)


def fsync_path(path: str | Path) -> None:
    """Flush a file's data (or a directory's entries) to disk. A directory must be synced after
    a rename inside it for the rename to survive a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """A temporary file next to `path` (parents created); when the block ends normally it is
    fsync'ed and renamed to `path`, and the directory fsync'ed. If the block raises, the
    temporary file is removed and `path` is untouched. Text modes write UTF-8."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file ordinary permissions
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_path(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(
    path: str | Path, obj: Any, *, sort_keys: bool = True, default: Callable[[Any], Any] | None = None
) -> None:
    """`obj` as indented JSON with a final newline, atomically. `default` as json.dumps's
    (`default=str` for records that may hold paths or dates)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, default=default) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in chunks (a Pile-sized file is never held whole)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex sha256 of a JSON-able object with sorted keys (stable across dict order)."""
    return sha256_bytes(json.dumps(obj, sort_keys=True).encode())


def git_info(cwd: str | Path | None = None) -> dict[str, Any]:
    """{'commit': sha or UNKNOWN, 'dirty': bool or None} of the repository at `cwd` (default:
    the working directory), read when called (a long-lived process may see several commits).
    Outside a repository, or without git, it is {'commit': 'unknown', 'dirty': None}."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True, cwd=cwd
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=30, check=True, cwd=cwd,
        ).stdout
        return {"commit": sha or UNKNOWN, "dirty": bool(status.strip()) if sha else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": UNKNOWN, "dirty": None}

"""Small file helpers shared by the data stages: atomic writes, hashing, JSONL.

Every file a data stage produces is written to a temporary name in the same directory and
renamed into place (`os.replace` is atomic on POSIX), so a killed job never leaves a
half-written file under the final name. Readers verify sizes (and optionally hashes) against
the manifest that is written last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

_UMASK = os.umask(0)
os.umask(_UMASK)


class DataError(RuntimeError):
    """A data stage cannot proceed; the message is one line that names the file and the fix."""


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary file next to `path`; on success fsync and rename it to `path`."""
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


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing {what}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def utf8_problem(path: str | Path) -> str | None:
    """Where `path` stops being UTF-8 ("<path>: line N, column C: not UTF-8 ..."), or None.

    For the error path of a text reader: a UnicodeDecodeError names neither file nor line, and
    its offset is relative to a read buffer. Line by line in binary is exact (no UTF-8
    sequence contains a newline byte) and holds one line in memory."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return (f"{path}: line {n}, column {e.start + 1}: not UTF-8 (byte 0x{raw[e.start]:02x}); "
                        "re-encode the file as UTF-8")
    return None


def iter_jsonl(path: str | Path, field: str | None = None) -> Iterator[Any]:
    """Records of a JSONL file (or record[field]). A missing file, a line that is not a JSON
    object (or lacks `field`) or bytes that are not UTF-8 are one-line DataErrors naming the
    file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (build it with `snakemake {path}`)")
    with open(path, encoding="utf-8") as f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {n}: not JSON ({e.msg}, column {e.colno})") from None
                if field is None:
                    yield rec
                elif isinstance(rec, dict) and field in rec:
                    yield rec[field]
                else:
                    raise DataError(f"{path}: line {n}: not a JSON object with a {field!r} field")
        except UnicodeDecodeError:
            raise DataError(utf8_problem(path) or f"{path}: not UTF-8") from None

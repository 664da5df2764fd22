"""Readers shared by the data stages: DataError, JSON and JSONL with one-line errors.

Writes and hashes are hades.io's (atomic_open, write_json, sha256_file): every file a data
stage produces is written to a temporary name in the same directory and renamed into place, so a
killed job never leaves a half-written file under the final name. Readers verify sizes (and
optionally hashes) against the manifest that is written last.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hades import io


class DataError(RuntimeError):
    """A data stage cannot proceed; the message is one line that names the file and the fix."""


def read_json(path: str | Path, what: str = "file") -> Any:
    """hades.io.read_json, with a missing file a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing {what}")
    return io.read_json(path)


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

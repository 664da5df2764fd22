"""hades.io: atomic writes leave the old file or the new one and no temporary file, the hashes
are hashlib's, and git_info outside a repository says "unknown" instead of raising."""

import hashlib
import json
import os
import stat

import pytest

from hades import io


class Boom(RuntimeError):
    pass


def _dir_entries(d):
    return sorted(p.name for p in d.iterdir())


def test_atomic_write_failing_midway_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "record.json"
    io.write_json(target, {"v": 1})
    with pytest.raises(Boom):
        with io.atomic_open(target, "w") as f:
            f.write('{"v": 2, "half": ')  # a partial write, then the writer dies
            f.flush()
            raise Boom
    assert json.loads(target.read_text()) == {"v": 1}, "the old content survives"
    assert _dir_entries(tmp_path) == ["record.json"], "the temporary file is removed"


def test_atomic_write_failing_leaves_no_file_where_there_was_none(tmp_path):
    target = tmp_path / "sub" / "new.bin"
    with pytest.raises(Boom):
        with io.atomic_open(target) as f:
            f.write(b"partial")
            raise Boom
    assert not target.exists()
    assert _dir_entries(target.parent) == []


def test_an_unserialisable_object_leaves_nothing_behind(tmp_path):
    with pytest.raises(TypeError):
        io.write_json(tmp_path / "x.json", {"a": object()})
    assert _dir_entries(tmp_path) == []
    io.write_json(tmp_path / "x.json", {"a": object(), "b": tmp_path}, default=str)  # records: default=str
    assert json.loads((tmp_path / "x.json").read_text())["b"] == str(tmp_path)


def test_writes_replace_the_file_with_ordinary_permissions(tmp_path):
    target = tmp_path / "t.txt"
    io.atomic_write_text(target, "one\n")
    io.atomic_write_text(target, "two\n")
    io.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert target.read_text() == "two\n" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask, "not mkstemp's 0600"
    assert _dir_entries(tmp_path) == ["b.bin", "t.txt"]


def test_write_json_format_and_read_back(tmp_path):
    p = tmp_path / "a.json"
    io.write_json(p, {"b": 1, "a": [1, 2]})
    assert p.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n', "sorted, indented, final newline"
    io.write_json(p, {"b": 1, "a": 2}, sort_keys=False)
    assert list(io.read_json(p)) == ["b", "a"]


def test_sha256_matches_hashlib(tmp_path):
    data = b"The grass is green. The sky is blue."
    want = hashlib.sha256(data).hexdigest()
    assert io.sha256_bytes(data) == want
    (tmp_path / "f").write_bytes(data)
    assert io.sha256_file(tmp_path / "f") == want
    assert io.sha256_file(tmp_path / "f", chunk=5) == want, "chunked reads hash the same bytes"
    assert io.sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert io.sha256_json({"b": 1, "a": 2}) == io.sha256_json({"a": 2, "b": 1})


def test_git_info_outside_a_repository_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repo above tmp_path
    monkeypatch.delenv("GIT_DIR", raising=False)
    assert io.git_info(tmp_path) == {"commit": io.UNKNOWN, "dirty": None}


def test_git_info_without_git_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable on PATH
    assert io.git_info() == {"commit": "unknown", "dirty": None}


def test_git_info_in_this_checkout():
    info = io.git_info(os.path.dirname(__file__))
    if info["commit"] == io.UNKNOWN:
        pytest.skip("not run from a git checkout")
    assert len(info["commit"]) == 40 and isinstance(info["dirty"], bool)

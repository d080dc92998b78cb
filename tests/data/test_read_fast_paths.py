"""Reading's cheaper paths give what the plain ones gave: the content column built from one joined buffer equals
Arrow's builder on every shape of input, and a repository read through it gives the same table."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from codefoundry.data.sources import ReadOptions, units_for
from codefoundry.data.sources.repo import binary_array
from codefoundry.data.sources.unit import SourceLimits


def cases() -> list[list[bytes | None]]:
    rng = random.Random(7)
    out: list[list[bytes | None]] = [[], [None], [b""], [None] * 8, [None] * 9, [b"x"] * 17]
    for n in (1, 7, 8, 9, 15, 16, 17, 64, 200):
        out.append([None if rng.random() < 0.3 else bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
                    for _ in range(n)])
    out.append(["grüße 日本語 🎉\r\n".encode() * 1000, None, b"\0binary\xff"])
    return out


@pytest.mark.parametrize("values", cases())
def test_binary_array_equals_the_builder(values):
    fast, plain = binary_array(values), pa.array(values, pa.binary())
    fast.validate(full=True)
    assert fast.equals(plain) and fast.null_count == plain.null_count and fast.type == plain.type
    assert fast.to_pylist() == values


def _serialized(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_a_folder_reads_the_same_table(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "LICENSE").write_text("MIT License\n\nPermission is hereby granted, free of charge, ...")
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    (repo / "pkg" / "ü.py").write_text("print('grüße')\n")
    (repo / "pkg" / "empty.py").write_bytes(b"")
    (repo / "pkg" / "bin.dat").write_bytes(b"\0\1\2")
    (repo / "pkg" / "latin.txt").write_bytes(b"caf\xe9")
    (repo / "pkg" / "big.py").write_text("y = 2\n" * 100)
    options = ReadOptions(limits=SourceLimits(max_file_bytes=300), batch_rows=3)
    fast = [_serialized(t) for u in units_for(str(repo), options) for t in u.read()]
    monkeypatch.setattr("codefoundry.data.sources.repo.binary_array", lambda v: pa.array(v, pa.binary()))
    plain = [_serialized(t) for u in units_for(str(repo), options) for t in u.read()]
    assert len(fast) == 3 and fast == plain


def test_record_names_as_pathlib_writes_them():
    from pathlib import PurePosixPath

    from codefoundry.data.sources.python_env import _posix_all

    tricky = ["", ".", "./a.py", "a//b.py", "a/./b.py", "dir/", "dir/.", "../../bin/x", "é/ü.py", "a/../b", ".hidden",
              "x.", "a/.b/c", "..", "a/..", "/abs/path", "a\\b.py"]
    plain = ["pkg/mod.py", "pkg-1.0.dist-info/RECORD", "pkg/sub/__init__.py"]
    for names in ([], plain, *([*plain[:k], t, *plain[k:]] for t in tricky for k in range(len(plain) + 1))):
        assert _posix_all(list(names)) == [PurePosixPath(n).as_posix() for n in names]

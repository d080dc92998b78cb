"""Manifests: round trip, lineage hashes, and atomic writes that never leave a partial file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codefoundry.atomic import atomic_open, atomic_write_json, clean_temp_files
from codefoundry.errors import ArtifactError
from codefoundry.manifest import (
    lineage,
    manifest_sha256,
    read_manifest,
    verify_inputs,
    write_manifest,
)


def test_round_trip(tmp_path: Path) -> None:
    written = write_manifest(tmp_path, "dataset", {"workers": 2}, seed=7, command=["codefoundry", "x"],
                             extra={"rows": 3})
    read = read_manifest(tmp_path, kind="dataset")
    assert read == written
    assert read.command == ["codefoundry", "x"] and read.seed == 7 and read.extra == {"rows": 3}
    for key in ("codefoundry", "python", "torch", "transformers"):
        assert read.versions[key], key
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["config"] == {"workers": 2} and raw["created"].endswith("+00:00")


def test_wrong_kind_and_missing(tmp_path: Path) -> None:
    write_manifest(tmp_path, "tokenizer", {})
    with pytest.raises(ArtifactError, match="is a tokenizer artifact, expected a model"):
        read_manifest(tmp_path, kind="model")
    with pytest.raises(ArtifactError, match=r"has no manifest\.json"):
        read_manifest(tmp_path / "elsewhere")


def test_lineage_hashes_inputs(tmp_path: Path) -> None:
    dataset, tok, model = tmp_path / "dataset", tmp_path / "tokenizer", tmp_path / "model"
    write_manifest(dataset, "dataset", {"a": 1})
    write_manifest(tok, "tokenizer", {}, inputs={"dataset": dataset})
    m = write_manifest(model, "model", {}, inputs={"dataset": dataset, "tokenizer": tok})
    assert m.inputs["dataset"].manifest_sha256 == manifest_sha256(dataset)
    assert m.inputs["tokenizer"].kind == "tokenizer"
    chain = [(role, man.kind) for role, _, man in lineage(model)]
    # each artifact once, even when reached twice (model → tokenizer → dataset)
    assert chain == [("model", "model"), ("model/dataset", "dataset"), ("model/tokenizer", "tokenizer")]
    assert verify_inputs(model) == {"dataset": True, "tokenizer": True}
    write_manifest(dataset, "dataset", {"a": 2})  # the dataset was rebuilt: lineage no longer matches
    assert verify_inputs(model) == {"dataset": False, "tokenizer": True}


def test_atomic_write_error_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write('{"v": 2, "partial')
        raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_crash_mid_write_leaves_no_partial_file(tmp_path: Path) -> None:
    """A process killed mid-write (no cleanup at all) leaves the old file intact."""
    target = tmp_path / "manifest.json"
    atomic_write_json(target, {"v": 1})
    script = textwrap.dedent(f"""
        import os
        from codefoundry.atomic import atomic_open
        with atomic_open({str(target)!r}, "wb") as f:
            f.write(b"x" * 1_000_000)
            f.flush()
            os._exit(9)  # crash: no exception handling, no rename
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == 9
    assert json.loads(target.read_text()) == {"v": 1}
    leftovers = [p for p in tmp_path.iterdir() if p.name != "manifest.json"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".tmp-")
    assert clean_temp_files(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]

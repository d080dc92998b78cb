"""A stage's --out never lands on, around or inside what it reads, nor on another kind of artifact.

Each mistake is one `error:` line, and the inputs are as they were: `--overwrite` does not delete a
source, a tokenizer does not replace a dataset's manifest, a run does not read its own output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codefoundry.cli import run
from codefoundry.errors import ArtifactError
from codefoundry.manifest import write_manifest


def one_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error:") and all(n in err[0] for n in needles), err[0]
    return err[0]


def kind(artifact: Path) -> str:
    return json.loads((artifact / "manifest.json").read_text())["kind"]


@pytest.fixture
def plain_source(tmp_path: Path) -> Path:
    """A plain (non-git) folder of code, read file by file."""
    src = tmp_path / "my code"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "util.py").write_text("def add(a, b):\n    return a + b\n" * 20)
    (src / "LICENSE").write_text("MIT License\n")
    return src


@pytest.fixture
def dataset_copy(tmp_path: Path, tiny_dataset: Path) -> Path:
    return Path(shutil.copytree(tiny_dataset, tmp_path / "work" / "dataset"))


def test_curate_overwrite_onto_the_source_keeps_the_source(plain_source: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data", "curate", str(plain_source), "--out", str(plain_source), "--overwrite", "-j", "1"]) == 1
    one_error(capsys, "--out", "source")
    assert (plain_source / "pkg" / "util.py").read_text().startswith("def add")


def test_curate_overwrite_onto_a_folder_holding_the_source(plain_source: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    parent = plain_source.parent
    assert run(["data", "curate", str(plain_source / "pkg"), "--out", str(parent), "--overwrite", "-j", "1"]) == 1
    one_error(capsys, "--overwrite")
    assert (plain_source / "pkg" / "util.py").exists()


def test_curate_out_inside_a_plain_source_is_refused(plain_source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = plain_source / "dataset"
    assert run(["data", "curate", str(plain_source), "--out", str(out), "-j", "1"]) == 1
    one_error(capsys, "inside the source")
    assert not out.exists()


def test_curate_out_is_a_file(plain_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert run(["data", "curate", str(plain_source), "--out", str(target), "-j", "1"]) == 1
    one_error(capsys, "is a file")
    assert target.read_text() == "mine"


def test_curate_unknown_language_is_named(plain_source: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert run(["data", "curate", str(plain_source), "--out", str(out), "--languages", "python,pyhton"]) == 1
    one_error(capsys, "'pyhton'", "Python")
    assert not out.exists()


def test_derived_dataset_overwrite_onto_its_parent(dataset_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data", "dedup", str(dataset_copy), "--out", str(dataset_copy.parent), "--overwrite"]) == 1
    one_error(capsys, "--out")
    assert kind(dataset_copy) == "dataset" and any((dataset_copy / "data" / "files").glob("*.parquet"))


def test_tokenizer_into_its_dataset(dataset_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["tokenizer", "train", str(dataset_copy), "--out", str(dataset_copy), "--vocab-size", "300"]) == 1
    one_error(capsys, "dataset")
    assert kind(dataset_copy) == "dataset" and not (dataset_copy / "tokenizer.json").exists()


def test_tokens_into_a_dataset(dataset_copy: Path, tiny_tokenizer_dir: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["train", "pack", "--dataset", str(dataset_copy), "--tokenizer", str(tiny_tokenizer_dir),
                "--out", str(dataset_copy)]) == 1
    one_error(capsys, "dataset")
    assert kind(dataset_copy) == "dataset" and not (dataset_copy / "index.json").exists()


def test_model_into_a_dataset(dataset_copy: Path, tiny_tokenizer_dir: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    other = Path(shutil.copytree(dataset_copy, tmp_path / "other"))
    assert run(["train", "--dataset", str(dataset_copy), "--tokenizer", str(tiny_tokenizer_dir),
                "--out", str(other), "--preset", "tiny", "--max-steps", "1"]) == 1
    one_error(capsys, "holds a dataset artifact")
    assert kind(other) == "dataset" and not (other / "model.safetensors").exists()


def test_write_manifest_never_replaces_another_kind(dataset_copy: Path) -> None:
    before = (dataset_copy / "manifest.json").read_bytes()
    with pytest.raises(ArtifactError, match="holds a dataset artifact"):
        write_manifest(dataset_copy, "tokens", {})
    assert (dataset_copy / "manifest.json").read_bytes() == before
    write_manifest(dataset_copy, "dataset", {"again": True})  # its own kind: rewritten as before
    assert kind(dataset_copy) == "dataset"


def test_huge_vocab_size_is_one_error_line(tiny_dataset: Path, tmp_path: Path) -> None:
    # a subprocess: `tokenizers` aborts the whole process when asked for 2**31 tokens
    done = subprocess.run([sys.executable, "-m", "codefoundry", "tokenizer", "train", str(tiny_dataset),
                           "--out", str(tmp_path / "tok"), "--vocab-size", str(2**31)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "vocab_size" in err[0], err
    assert not (tmp_path / "tok").exists()

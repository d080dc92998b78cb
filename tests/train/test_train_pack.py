"""`train pack`: token files, document boundaries, repository-level split, dtype, determinism, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from codefoundry.errors import ArtifactError, UserError
from codefoundry.manifest import read_manifest, verify_inputs
from codefoundry.train import PackConfig, pack
from codefoundry.train.pack import open_split, token_dtype
from codefoundry.train.samples import PackedSamples


@pytest.fixture(scope="module")
def packed(train_dataset_dir: Path, train_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokens")
    return pack(train_dataset_dir, train_tokenizer_dir, out,
                PackConfig(validation_fraction=0.34, metadata_rate=1.0, workers=2))


@pytest.fixture(scope="module")
def tok(train_tokenizer_dir: Path):
    from codefoundry.tokenizer import load_tokenizer

    return load_tokenizer(train_tokenizer_dir)


def _docs(packed: Path, split: str) -> list[np.ndarray]:
    docs = []
    for f in open_split(packed, split).values():
        docs += [np.asarray(f.tokens[a:b]) for a, b in zip(f.doc_starts[:-1], f.doc_starts[1:], strict=True)]
    return docs


def test_index_manifest_and_dtype(packed: Path, train_dataset_dir: Path) -> None:
    index = json.loads((packed / "index.json").read_text())
    assert index["dtype"] == "uint16" and index["vocab_size"] == 600 and index["eod"] == 0
    assert set(index["splits"]) == {"train", "validation"}
    assert set(index["splits"]["train"]) == {"files", "tests"}
    for split in index["splits"].values():
        for entry in split.values():
            assert (packed / entry["file"]).stat().st_size == 2 * entry["tokens"]
    manifest = read_manifest(packed, kind="tokens")
    assert set(manifest.inputs) == {"dataset", "tokenizer"}
    assert verify_inputs(packed) == {"dataset": True, "tokenizer": True}
    assert not (packed / "work").exists()
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32 and token_dtype(49152) == np.uint16


def test_documents_are_joined_by_eod_with_metadata(packed: Path, tok, train_dataset_dir: Path) -> None:
    contents = {r["content"] for shard in (train_dataset_dir / "data").glob("*/*.parquet")
                for r in pq.read_table(shard, columns=["content"]).to_pylist()}
    docs = _docs(packed, "train") + _docs(packed, "validation")
    assert len(docs) == len(contents)
    for doc in docs:
        assert doc[-1] == 0 and 0 not in doc[:-1].tolist()  # exactly one EOD, at the end
        text = tok.decode(doc[:-1].tolist(), skip_special_tokens=False)
        assert text.startswith("<reponame>acme/") and "<filename>src/" in text and "<gh_stars>7\n" in text
        assert text.split("\n", 1)[1] in contents


def test_split_is_by_repository(packed: Path, tok) -> None:
    def repos(split: str) -> set[str]:
        return {tok.decode(d.tolist(), skip_special_tokens=False).split("<filename>")[0][len("<reponame>"):]
                for d in _docs(packed, split)}

    train, val = repos("train"), repos("validation")
    assert train and val and not train & val
    assert len(val) == 2  # round(0.34 × 6)


def test_deterministic_across_workers_and_reruns(packed: Path, train_dataset_dir: Path, train_tokenizer_dir: Path,
                                                 tmp_path: Path) -> None:
    again = pack(train_dataset_dir, train_tokenizer_dir, tmp_path / "t",
                 PackConfig(validation_fraction=0.34, metadata_rate=1.0, workers=1))
    for rel in ("train/files.bin", "validation/files.bin", "train/tests.docs.npy", "index.json"):
        assert (again / rel).read_bytes() == (packed / rel).read_bytes()
    # a rerun over an unfinished pack (no index.json) rebuilds the same bytes
    (again / "index.json").unlink()
    pack(train_dataset_dir, train_tokenizer_dir, again, PackConfig(validation_fraction=0.34, metadata_rate=1.0))
    assert (again / "train/files.bin").read_bytes() == (packed / "train/files.bin").read_bytes()


def test_samples_cover_weighted_subsets(packed: Path) -> None:
    samples = PackedSamples(packed, "train", seq_len=64, seed=0)
    n = len(samples)
    assert n > 10
    contexts = [samples.context(i) for i in range(n)]
    assert all(len(c) == 65 for c in contexts)
    # one epoch visits every chunk once: the next epoch is a different order of the same chunks
    second = {tuple(samples.context(n + i).tolist()) for i in range(n)}
    assert second == {tuple(c.tolist()) for c in contexts}
    assert [samples.context(n + i).tolist() for i in range(5)] != [c.tolist() for c in contexts[:5]]


def test_bad_inputs_are_clear(train_dataset_dir: Path, train_tokenizer_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        pack(tmp_path / "missing", train_tokenizer_dir, tmp_path / "t")
    empty = tmp_path / "empty"
    (empty / "data").mkdir(parents=True)
    (empty / "manifest.json").write_text((train_dataset_dir / "manifest.json").read_text())
    with pytest.raises(ArtifactError, match="no data/<subset>/"):
        pack(empty, train_tokenizer_dir, tmp_path / "t")
    with pytest.raises(ArtifactError, match="is a tokenizer artifact, expected a dataset"):
        pack(train_tokenizer_dir, train_tokenizer_dir, tmp_path / "t")
    with pytest.raises(UserError, match="subset_weights names subsets the dataset does not have: nope"):
        pack(train_dataset_dir, train_tokenizer_dir, tmp_path / "t", PackConfig(subset_weights={"nope": 2.0}))

"""`train pack`: a dataset → the `tokens/` artifact (flat token files, Megatron/nanoGPT style).

    tokens/
      manifest.json                kind "tokens"; inputs: dataset, tokenizer
      index.json                   dtype, vocab, eod, and per split → subset: file, tokens, documents, weight
      train/<subset>.bin           doc₀ EOD doc₁ EOD …  (uint16 when vocab < 65,536, else uint32)
      train/<subset>.docs.npy      int64 start offset of every document, plus the end (documents + 1)
      validation/<subset>.bin      the same for the held-out repositories
      validation/<subset>.docs.npy

Each parquet shard is one work unit, tokenized in its own process into `work/` and marked done,
so an interrupted pack resumes where it stopped; the merge concatenates the units in shard order,
so the bytes depend only on the inputs and the config. Repositories are split, not files: a
repository is in validation when its rank by sha256(seed, name) is among the first
`validation_fraction` of all repositories, so no repository is on both sides.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from codefoundry.atomic import atomic_open, atomic_write_json, clean_temp_files
from codefoundry.console import progress_bar
from codefoundry.errors import ArtifactError, UserError
from codefoundry.manifest import read_manifest, write_manifest
from codefoundry.train.config import PackConfig

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")
INDEX_NAME = "index.json"
METADATA_TOKENS = ("<reponame>", "<filename>", "<gh_stars>")
ENCODE_BATCH = 256
FORMATTED_SUBSETS = frozenset({"notebooks", "commits", "issues"})
"""Subsets whose rows are StarCoderData's formats (`<jupyter_start>…`, `<commit_before>…`, `<issue_start>…`)."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab < 65,536), else uint32."""
    return np.dtype(np.uint16) if vocab_size < 2**16 else np.dtype(np.uint32)


def check_tokenizer(tokenizer: Path) -> None:
    if not (tokenizer / "tokenizer.json").exists():
        raise ArtifactError(f"tokenizer {tokenizer} has no tokenizer.json",
                            hint="train one with: codefoundry tokenizer train DATASET --out TOKENIZER")


def dataset_shards(dataset: Path) -> list[tuple[str, Path]]:
    """(subset, shard) for every `data/<subset>/*.parquet`, sorted; errors name what is missing."""
    if not dataset.is_dir():
        raise ArtifactError(f"dataset {dataset} does not exist")
    read_manifest(dataset, kind="dataset")
    shards = sorted((p.parent.name, p) for p in (dataset / "data").glob("*/*.parquet"))
    if not shards:
        raise ArtifactError(f"dataset {dataset} has no data/<subset>/*.parquet shards")
    return shards


def validation_repos(shards: list[tuple[str, Path]], fraction: float, seed: int) -> set[str]:
    """The held-out repositories: the first `fraction` of all, ranked by sha256(seed, name)."""
    repos: set[str] = set()
    for _, shard in shards:
        column = pq.read_table(shard, columns=["repo_name"]).column("repo_name")
        repos.update(r for r in column.to_pylist() if r is not None)
    if fraction <= 0 or len(repos) < 2:
        return set()
    ranked = sorted(repos, key=lambda r: hashlib.sha256(f"{seed}:{r}".encode()).hexdigest())
    count = min(len(ranked) - 1, max(1, round(fraction * len(ranked))))
    return set(ranked[:count])


def with_metadata(row: dict[str, Any], rate: float, seed: int) -> str:
    """StarCoder's `<reponame>R<filename>F<gh_stars>S\\n` prefix, each part kept with p = rate."""
    content = row["content"]
    if rate <= 0:
        return content
    key = hashlib.sha256(f"{seed}:{row.get('repo_name')}:{row.get('path')}".encode()).digest()
    draws = np.random.RandomState(np.frombuffer(key[:16], dtype=np.uint32)).random_sample(3)
    values = (row.get("repo_name"), row.get("path"), row.get("stars"))
    parts = [f"{token}{value}" for token, value, draw in zip(METADATA_TOKENS, values, draws, strict=True)
             if draw < rate and value is not None]
    return "".join(parts) + "\n" + content if parts else content


@dataclass(frozen=True)
class Unit:
    """One shard to tokenize into `work/<subset>/<name>.<split>.{bin,len.npy}`."""

    subset: str
    shard: Path
    work: Path
    tokenizer: Path
    validation: frozenset[str]
    metadata_rate: float
    seed: int

    @property
    def stem(self) -> Path:
        return self.work / self.subset / self.shard.stem

    @property
    def done(self) -> Path:
        return self.stem.with_name(self.stem.name + ".done")


_TOKENIZERS: dict[Path, Any] = {}


def _tokenizer(path: Path):
    from codefoundry.tokenizer import load_tokenizer

    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = load_tokenizer(path)
    return _TOKENIZERS[path]


def tokenize_unit(unit: Unit) -> dict[str, int]:
    """Tokenize one shard (each document + EOD) into its per-split files; returns token counts."""
    tokenizer = _tokenizer(unit.tokenizer)
    eod = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    dtype = token_dtype(len(tokenizer))
    table = pq.read_table(unit.shard)
    columns = [c for c in ("content", "repo_name", "path", "stars") if c in table.column_names]
    if "content" not in columns:
        raise ArtifactError(f"{unit.shard} has no 'content' column")
    rows = [r for r in table.select(columns).to_pylist() if r.get("content")]
    unit.stem.parent.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        chosen = [r for r in rows if (r.get("repo_name") in unit.validation) == (split == "validation")]
        lengths: list[int] = []
        with atomic_open(f"{unit.stem}.{split}.bin") as f:
            for start in range(0, len(chosen), ENCODE_BATCH):
                batch = chosen[start:start + ENCODE_BATCH]
                # StarCoder's metadata prefixes belong to source files; StarCoderData's formatted
                # subsets carry their own tokens
                rate = 0.0 if unit.subset in FORMATTED_SUBSETS else unit.metadata_rate
                texts = [with_metadata(r, rate, unit.seed) for r in batch]
                for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
                    ids.append(eod)
                    f.write(np.asarray(ids, dtype=dtype).tobytes())
                    lengths.append(len(ids))
        with atomic_open(f"{unit.stem}.{split}.len.npy") as f:
            np.save(f, np.asarray(lengths, dtype=np.int64))
        counts[split] = int(sum(lengths))
    unit.done.touch()
    return counts


def _merge(units: list[Unit], out: Path, split: str, subset: str, dtype: np.dtype) -> dict[str, Any]:
    """Concatenate a subset's units (shard order) into `<split>/<subset>.bin` + `.docs.npy`."""
    target = out / split / f"{subset}.bin"
    lengths = [np.load(f"{u.stem}.{split}.len.npy") for u in units]
    with atomic_open(target) as f:
        for u in units:
            with open(f"{u.stem}.{split}.bin", "rb") as src:
                shutil.copyfileobj(src, f, 1 << 22)
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(all_lengths)]).astype(np.int64)
    with atomic_open(out / split / f"{subset}.docs.npy") as f:
        np.save(f, starts)
    assert target.stat().st_size == int(starts[-1]) * dtype.itemsize, "merged token file has the wrong size"
    return {"file": f"{split}/{subset}.bin", "documents": f"{split}/{subset}.docs.npy",
            "tokens": int(starts[-1]), "num_documents": len(all_lengths)}


def _run_key(shards: list[tuple[str, Path]], tokenizer: Path, config: PackConfig) -> str:
    """What makes two packs the same run: the shards (name, size, mtime), the tokenizer's bytes, the settings."""
    blob = json.dumps({"shards": [(s, str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for s, p in shards],
                       "tokenizer": hashlib.sha256((tokenizer / "tokenizer.json").read_bytes()).hexdigest(),
                       "config": config.model_dump(mode="json", exclude={"workers"})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _claim_work(work: Path, key: str) -> None:
    """Keep `work/` only for a resume of the same run: an interrupted pack of other inputs or settings left
    units that this one must not reuse."""
    plan = work / "plan.json"
    if work.exists() and (not plan.exists() or json.loads(plan.read_text(encoding="utf-8")).get("run_key") != key):
        shutil.rmtree(work)
    atomic_write_json(plan, {"run_key": key})


def pack(dataset: str | Path, tokenizer: str | Path, out: str | Path, config: PackConfig | None = None) -> Path:
    """Tokenize `dataset` with `tokenizer` into the `tokens/` artifact at `out`; resumable."""
    config = config or PackConfig()
    dataset, tokenizer_dir, out = Path(dataset), Path(tokenizer), Path(out)
    shards = dataset_shards(dataset)
    check_tokenizer(tokenizer_dir)
    tok = _tokenizer(tokenizer_dir)
    vocab_size = len(tok)
    eod = tok.convert_tokens_to_ids("<|endoftext|>")
    if eod is None or (eod == tok.unk_token_id and tok.unk_token != "<|endoftext|>"):
        raise ArtifactError(f"tokenizer {tokenizer_dir} has no <|endoftext|> token")
    dtype = token_dtype(vocab_size)
    subsets = sorted({subset for subset, _ in shards})
    unknown = sorted(set(config.subset_weights) - set(subsets))
    if unknown:
        raise UserError(f"subset_weights names subsets the dataset does not have: {', '.join(unknown)} "
                        f"(it has: {', '.join(subsets)})")
    out.mkdir(parents=True, exist_ok=True)
    clean_temp_files(out)
    held_out = frozenset(validation_repos(shards, config.validation_fraction, config.seed))
    work = out / "work"
    _claim_work(work, _run_key(shards, tokenizer_dir, config))
    units = [Unit(subset, shard, work, tokenizer_dir.resolve(), held_out, config.metadata_rate, config.seed)
             for subset, shard in shards]
    todo = [u for u in units if not u.done.exists()]
    workers = min(config.workers or os.cpu_count() or 1, max(1, len(todo)))
    with progress_bar() as progress:
        task = progress.add_task("tokenizing shards", total=len(units), completed=len(units) - len(todo))
        if workers <= 1:
            for u in todo:
                tokenize_unit(u)
                progress.advance(task)
        else:
            with ProcessPoolExecutor(workers) as pool:
                for _ in pool.map(tokenize_unit, todo):
                    progress.advance(task)
    index: dict[str, Any] = {"dtype": dtype.name, "vocab_size": vocab_size, "eod": int(eod),
                             "validation_repositories": len(held_out), "splits": {}}
    for split in SPLITS:
        (out / split).mkdir(exist_ok=True)
        index["splits"][split] = {}
        for subset in subsets:
            entry = _merge([u for u in units if u.subset == subset], out, split, subset, dtype)
            entry["weight"] = float(config.subset_weights.get(subset, 1.0))
            index["splits"][split][subset] = entry
    train_tokens = sum(e["tokens"] for e in index["splits"]["train"].values())
    if train_tokens == 0:
        raise UserError(f"dataset {dataset} has no documents with content to train on")
    atomic_write_json(out / INDEX_NAME, index)
    write_manifest(out, "tokens", config, seed=config.seed, inputs={"dataset": dataset, "tokenizer": tokenizer_dir},
                   extra={"train_tokens": train_tokens,
                          "validation_tokens": sum(e["tokens"] for e in index["splits"]["validation"].values())})
    shutil.rmtree(work, ignore_errors=True)
    return out


@dataclass(frozen=True)
class TokenFile:
    """One split/subset's tokens, memory-mapped."""

    tokens: np.ndarray     # [n_tokens] uint16/uint32 memmap
    doc_starts: np.ndarray  # [n_docs + 1] int64
    weight: float


def read_index(tokens_dir: str | Path) -> dict[str, Any]:
    path = Path(tokens_dir) / INDEX_NAME
    read_manifest(tokens_dir, kind="tokens")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{tokens_dir} has no {INDEX_NAME}: the pack did not finish (rerun it)") from None


def open_split(tokens_dir: str | Path, split: str) -> dict[str, TokenFile]:
    """Memory-map every subset file of `split`."""
    tokens_dir = Path(tokens_dir)
    index = read_index(tokens_dir)
    files = {}
    for subset, entry in index["splits"].get(split, {}).items():
        n = entry["tokens"]
        data = (np.memmap(tokens_dir / entry["file"], dtype=index["dtype"], mode="r", shape=(n,)) if n
                else np.zeros(0, dtype=index["dtype"]))
        files[subset] = TokenFile(data, np.load(tokens_dir / entry["documents"]), entry["weight"])
    return files


def split_tokens(tokens_dir: str | Path, split: str) -> int:
    return sum(e["tokens"] for e in read_index(tokens_dir)["splits"].get(split, {}).values())


def is_packed(out: Path, dataset: Path, tokenizer: Path) -> bool:
    """Is `out` a finished pack of these inputs (so training can reuse it)?"""
    try:
        manifest = read_manifest(out, kind="tokens")
    except ArtifactError:
        return False
    if not (out / INDEX_NAME).exists():
        return False
    refs = manifest.inputs
    return (set(refs) == {"dataset", "tokenizer"}
            and Path(refs["dataset"].path) == dataset.resolve()
            and Path(refs["tokenizer"].path) == tokenizer.resolve())


def chunk_count(n_tokens: int, seq_len: int) -> int:
    """Training chunks of seq_len + 1 tokens (overlapping by one) in a file of n_tokens."""
    return max(0, math.floor((n_tokens - 1) / seq_len))

"""Stream a dataset's code for tokenizer training, sampled by language to a byte budget.

A dataset/ artifact holds `data/<subset>/*.parquet` shards with The Stack's columns
(`content`, `lang`, `size`). Two passes over the shards, neither loading a shard whole:

1. count bytes per language from the small `lang`/`size` columns;
2. stream `content` in record batches, keeping each row with its language's probability.

Each language's share of the budget is proportional to `bytes ** alpha` (alpha = 1: as in the
data; alpha < 1 lifts rare languages, as multilingual tokenizers and models do), capped at the
bytes the language has. Every subset is read (files, notebooks, commits, issues); a subset's
weight (`subset_weights`, as `train pack` has them: missing subsets weigh 1.0, 0 leaves one out)
scales its bytes in the budget and the chance of keeping each of its rows. Sampling is seeded
per shard, so a rerun yields the same rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from codefoundry.errors import ArtifactError, UserError

UNKNOWN_LANG = "unknown"
BATCH_ROWS = 1024


def dataset_shards(dataset: str | Path) -> list[Path]:
    """Every `data/<subset>/*.parquet` shard of a dataset (all subsets), in a stable order."""
    root = Path(dataset)
    if not root.is_dir():
        raise ArtifactError(f"dataset directory {root} does not exist",
                            "curate one with: codefoundry data curate SOURCES --out DIR")
    shards = sorted((root / "data").glob("**/*.parquet"))
    if not shards:
        raise ArtifactError(f"dataset {root} has no data/<subset>/*.parquet shards")
    for shard in shards:
        names = pq.read_schema(shard).names
        if "content" not in names:
            raise ArtifactError(f"{shard} has no `content` column (columns: {', '.join(names)})")
    return shards


def subset_of(shard: Path) -> str:
    """The subset a `data/<subset>/*.parquet` shard belongs to."""
    return shard.parent.name


def check_subset_weights(shards: list[Path], weights: dict[str, float]) -> None:
    """An error naming the subsets `weights` names that the dataset does not have."""
    have = sorted({subset_of(s) for s in shards})
    unknown = sorted(set(weights) - set(have))
    if unknown:
        raise UserError(f"subset_weights names subsets the dataset does not have: {', '.join(unknown)} "
                        f"(it has: {', '.join(have)})")


def language_bytes(shards: list[Path], weights: dict[str, float] | None = None) -> Counter[str]:
    """Bytes of content per language over all shards (from `size`, or content lengths if absent),
    each subset's bytes scaled by its weight."""
    totals: Counter[str] = Counter()
    weights = weights or {}
    for shard in shards:
        weight = weights.get(subset_of(shard), 1.0)
        if weight <= 0:
            continue
        names = pq.read_schema(shard).names
        columns = (["lang"] if "lang" in names else []) + (["size"] if "size" in names else ["content"])
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=BATCH_ROWS * 8, columns=columns):
            langs, sizes = _langs(batch), _sizes(batch)
            for lang, size in zip(langs, sizes, strict=True):
                totals[lang] += round(size * weight)
    return totals


def language_targets(totals: Counter[str], byte_budget: int, alpha: float) -> dict[str, float]:
    """Probability of keeping a row of each language so the kept bytes meet `byte_budget`."""
    remaining = {lang: float(n) for lang, n in totals.items() if n > 0}
    budget, keep = float(byte_budget), {}
    # water-filling: languages whose share exceeds what they have are kept whole,
    # and their unused share is spread over the others
    while remaining:
        weights = {lang: n ** alpha for lang, n in remaining.items()}
        scale = budget / sum(weights.values())
        full = {lang for lang, n in remaining.items() if weights[lang] * scale >= n}
        if not full:
            keep.update({lang: weights[lang] * scale / n for lang, n in remaining.items()})
            break
        for lang in full:
            keep[lang] = 1.0
            budget -= remaining.pop(lang)
    return keep


@dataclass
class SampleStats:
    documents: int = 0
    bytes: int = 0
    bytes_by_language: Counter[str] = field(default_factory=Counter)


def sample_documents(shards: list[Path], keep: dict[str, float], seed: int, stats: SampleStats,
                     max_document_bytes: int, weights: dict[str, float] | None = None) -> Iterator[str]:
    """Yield the kept rows' content; `stats` counts what was yielded."""
    weights = weights or {}
    for index, shard in enumerate(shards):
        weight = weights.get(subset_of(shard), 1.0)
        if weight <= 0:
            continue
        rng = np.random.default_rng([seed, index])
        names = pq.read_schema(shard).names
        columns = ["content"] + (["lang"] if "lang" in names else [])
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=BATCH_ROWS, columns=columns):
            draws = rng.random(batch.num_rows)
            langs = _langs(batch)
            contents = batch.column("content").to_pylist()
            for text, lang, u in zip(contents, langs, draws, strict=True):
                if text is None or u >= min(1.0, keep.get(lang, 0.0) * weight):
                    continue
                size = len(text.encode("utf-8"))
                if size > max_document_bytes:
                    continue
                stats.documents += 1
                stats.bytes += size
                stats.bytes_by_language[lang] += size
                yield text


def _langs(batch) -> list[str]:
    if "lang" not in batch.schema.names:
        return [UNKNOWN_LANG] * batch.num_rows
    return [lang or UNKNOWN_LANG for lang in batch.column("lang").to_pylist()]


def _sizes(batch) -> list[int]:
    if "size" in batch.schema.names:
        return [s or 0 for s in batch.column("size").to_pylist()]
    lengths = pc.binary_length(batch.column("content"))
    return [n or 0 for n in lengths.to_pylist()]

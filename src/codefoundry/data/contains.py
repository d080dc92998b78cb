"""Membership test, Data Portraits style: "was this code in the dataset?"

At curate time every kept file is normalised (lowercase, whitespace runs → one space) and cut
into 50-character n-grams with stride 50 (Data Portraits' setting), stored in a Bloom filter
(`DATASET/index/contains.bloom.npy` + `contains.json`, false-positive rate ≤ 1%). A query
slides a 50-character window over the normalised snippet one character at a time: a window in
the filter marks 50 characters as seen. Only chains count (a hit whose neighbour 50 characters
away is also a hit: two consecutive stored n-grams); they join into spans. An isolated hit is
as likely a Bloom false positive as real text.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from codefoundry.errors import ArtifactError, UserError

NGRAM = 50        # Data Portraits: 50-character n-grams …
STRIDE = 50       # … with stride 50
FP_RATE = 0.01    # Data Portraits community portraits: FP ≤ 0.01
MIN_CHARS = 2 * NGRAM   # the least that can hold a chain of two stored n-grams
BITS = Path("index") / "contains.bloom.npy"
META = Path("index") / "contains.json"


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def _hashes(grams: list[str]) -> tuple[np.ndarray, np.ndarray]:
    digests = b"".join(hashlib.blake2b(g.encode("utf-8", "surrogatepass"), digest_size=16).digest() for g in grams)
    both = np.frombuffer(digests, dtype="<u8").reshape(-1, 2) if grams else np.zeros((0, 2), np.uint64)
    return both[:, 0], both[:, 1] | np.uint64(1)


def _positions(grams: list[str], m: int, k: int) -> np.ndarray:
    h1, h2 = _hashes(grams)
    with np.errstate(over="ignore"):
        pos = h1[:, None] + np.arange(k, dtype=np.uint64)[None, :] * h2[:, None]  # double hashing
    return (pos % np.uint64(m)).astype(np.int64)


class BloomFilter:
    def __init__(self, bits: np.ndarray, m: int, k: int) -> None:
        self.bits, self.m, self.k = bits, m, k

    @classmethod
    def sized(cls, n: int, fp_rate: float = FP_RATE) -> BloomFilter:
        m = max(64, int(-max(n, 1) * math.log(fp_rate) / math.log(2) ** 2))
        k = max(1, round(m / max(n, 1) * math.log(2)))
        return cls(np.zeros((m + 7) // 8, dtype=np.uint8), m, k)

    def add(self, grams: list[str]) -> None:
        pos = _positions(grams, self.m, self.k).reshape(-1)
        np.bitwise_or.at(self.bits, pos >> 3, (1 << (pos & 7)).astype(np.uint8))

    def contains(self, grams: list[str]) -> np.ndarray:
        pos = _positions(grams, self.m, self.k)
        return ((self.bits[pos >> 3] >> (pos & 7)) & 1).all(axis=1)


def _file_grams(text: str) -> list[str]:
    norm = normalize(text)
    return [norm[i:i + NGRAM] for i in range(0, len(norm) - NGRAM + 1, STRIDE)]


def build_contains_index(dataset: str | Path) -> Path:
    """Bloom filter of the 50-character n-grams (stride 50) of every kept row of every subset."""
    dataset = Path(dataset)
    shards = sorted((dataset / "data").glob("*/*.parquet"))
    n = 0
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(columns=["content"]):
            n += sum(max(0, len(normalize(t or "")) - NGRAM + STRIDE) // STRIDE for t in batch.column(0).to_pylist())
    bloom = BloomFilter.sized(n)
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(columns=["content"]):
            grams = [g for t in batch.column(0).to_pylist() for g in _file_grams(t or "")]
            if grams:
                bloom.add(grams)
    (dataset / BITS).parent.mkdir(parents=True, exist_ok=True)
    np.save(dataset / BITS, bloom.bits)
    (dataset / META).write_text(json.dumps({"m": bloom.m, "k": bloom.k, "n": n, "ngram": NGRAM, "stride": STRIDE,
                                            "fp_rate": FP_RATE, "normalize": "lowercase, whitespace runs → space"}))
    return dataset / BITS


def load_bloom(dataset: str | Path) -> BloomFilter:
    dataset = Path(dataset)
    if not (dataset / META).exists():
        raise ArtifactError(f"{dataset} has no membership index ({META})",
                            "rebuild the dataset with this version of `codefoundry data curate`")
    meta = json.loads((dataset / META).read_text())
    return BloomFilter(np.load(dataset / BITS), meta["m"], meta["k"])


@dataclass(frozen=True)
class Membership:
    normalized: str                  # the snippet as compared
    spans: list[tuple[int, int]]     # [start, end) in `normalized` covered by chains of stored n-grams
    windows: int                     # 50-char windows checked
    hits: int                        # windows found, chained or not (isolated ones may be false positives)

    @property
    def found(self) -> bool:
        """Some of the snippet was in the dataset (a chain of stored n-grams matched)."""
        return bool(self.spans)

    @property
    def coverage(self) -> float:
        return sum(e - s for s, e in self.spans) / max(1, len(self.normalized))

    @property
    def longest_chain(self) -> int:
        """Most stored n-grams in a row in one span (hits 50 characters apart)."""
        return max(((e - s) // NGRAM for s, e in self.spans), default=0)


def check_snippet(snippet: str) -> None:
    """Refuse a snippet too short for the index to confirm anything (it could only ever answer "not found")."""
    chars = len(normalize(snippet))
    if chars < MIN_CHARS:
        raise UserError(f"the snippet is {chars} characters after normalising (lowercase, whitespace runs as one "
                        f"space); at least {MIN_CHARS} are needed: the index confirms only runs of two consecutive "
                        f"{NGRAM}-character pieces")


def contains(dataset: str | Path, snippet: str, bloom: BloomFilter | None = None) -> Membership:
    """Which spans of `snippet` occur in the dataset's kept files (up to Bloom false positives)."""
    bloom = bloom or load_bloom(dataset)
    norm = normalize(snippet)
    grams = [norm[i:i + NGRAM] for i in range(len(norm) - NGRAM + 1)]
    found = bloom.contains(grams) if grams else np.zeros(0, dtype=bool)
    # only chains count: a hit whose neighbour 50 characters before or after is also a hit (two stored,
    # consecutive n-grams); an isolated hit is as likely a Bloom false positive (1%) as real text
    chained = np.zeros_like(found)
    chained[NGRAM:] |= found[NGRAM:] & found[:-NGRAM]
    chained[:-NGRAM] |= found[:-NGRAM] & found[NGRAM:]
    spans: list[tuple[int, int]] = []
    for i in np.flatnonzero(chained).tolist():
        if spans and i <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], i + NGRAM))
        else:
            spans.append((i, i + NGRAM))
    return Membership(norm, spans, len(grams), int(found.sum()))

"""Membership test, Data Portraits style: "was this code in the dataset?"

At curate time every kept file is normalised (lowercase, whitespace runs → one space) and cut
into 50-character n-grams with stride 50 (Data Portraits' setting), stored in a Bloom filter
(`DATASET/index/contains.bloom.npy` + `contains.json`). A query slides a 50-character window
over the normalised snippet one character at a time: a window in the filter marks 50 characters
as seen. Only chains count (hits 50 characters apart: consecutive stored n-grams); they join into
spans. An isolated hit is as likely a Bloom false positive as real text, and since a query tests
every offset (50 windows per stored n-gram) chance chains grow with the snippet: so the filter is
sized for 0.1% false positives (Data Portraits: 1%, tested at stride only), and a chain counts
only when it is long enough that a chance one is expected less than once in a thousand queries
of that length (two n-grams for snippets up to ~1,000 characters, three beyond).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from codefoundry.errors import ArtifactError, UserError

NGRAM = 50        # Data Portraits: 50-character n-grams …
STRIDE = 50       # … with stride 50
FP_RATE = 0.001   # per window; Data Portraits uses 0.01 but queries at stride, not at every offset
CHANCE_SPANS = 1e-3   # a span is reported when chance ones are expected this rarely per query
MIN_CHARS = 2 * NGRAM   # the least that can hold a chain of two stored n-grams
MAX_CHARS = 100_000   # a large source file; each character costs a window of k Bloom probes (time and memory)
MEMBERSHIP_METHOD = (f"{NGRAM}-character n-grams of the normalised snippet (lowercase, whitespace runs as one space) "
                     "against the dataset's Bloom filter, Data Portraits style; only runs of consecutive stored "
                     "n-grams long enough not to arise by chance count")
BITS = Path("index") / "contains.bloom.npy"
META = Path("index") / "contains.json"


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def _hashes(grams: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _split(b"".join(hashlib.blake2b(g.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                           for g in grams))


def _split(digests: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The two 64-bit halves of each 16-byte digest: double hashing's h1 and h2 (odd)."""
    both = np.frombuffer(digests, dtype="<u8").reshape(-1, 2) if digests else np.zeros((0, 2), np.uint64)
    return both[:, 0], both[:, 1] | np.uint64(1)


def _positions(grams: list[str], m: int, k: int) -> np.ndarray:
    return _digest_positions(*_hashes(grams), m, k)


def _digest_positions(h1: np.ndarray, h2: np.ndarray, m: int, k: int) -> np.ndarray:
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
        self._set(_positions(grams, self.m, self.k).reshape(-1))

    def add_digests(self, digests: bytes) -> None:
        """Add the n-grams whose 16-byte digests (`_hashes`' blake2b) are concatenated in `digests`."""
        self._set(_digest_positions(*_split(digests), self.m, self.k).reshape(-1))

    def _set(self, pos: np.ndarray) -> None:
        np.bitwise_or.at(self.bits, pos >> 3, (1 << (pos & 7)).astype(np.uint8))

    def contains(self, grams: list[str]) -> np.ndarray:
        pos = _positions(grams, self.m, self.k)
        return ((self.bits[pos >> 3] >> (pos & 7)) & 1).all(axis=1)

    @property
    def false_positive_rate(self) -> float:
        """The chance that an absent n-gram tests present: (share of bits set) ** k."""
        if not hasattr(self, "_fp"):
            self._fp = float((np.bitwise_count(self.bits).sum() / self.m) ** self.k)
        return self._fp


def _file_grams(text: str) -> list[str]:
    norm = normalize(text)
    return [norm[i:i + NGRAM] for i in range(0, len(norm) - NGRAM + 1, STRIDE)]


_blake16 = functools.partial(hashlib.blake2b, digest_size=16)
_digest = hashlib.blake2b.digest


def _file_digests(text: str) -> bytes:
    """`_hashes`' digests of `_file_grams(text)`, concatenated: the slicing and hashing run in C (map), and an
    ASCII text is cut as bytes (its characters are its bytes) instead of encoding each gram."""
    norm = normalize(text)
    stops = range(NGRAM, len(norm) + 1, STRIDE)
    if not stops:
        return b""
    raw = norm.encode("utf-8", "surrogatepass")
    if len(raw) == len(norm):
        grams: Iterable[bytes] = map(raw.__getitem__, map(slice, range(0, len(norm) - NGRAM + 1, STRIDE), stops))
    else:
        grams = (g.encode("utf-8", "surrogatepass") for g in map(norm.__getitem__, map(
            slice, range(0, len(norm) - NGRAM + 1, STRIDE), stops)))
    return b"".join(map(_digest, map(_blake16, grams)))


DIGEST_CHUNK = 1 << 22
"""Bytes of gram digests (16 per gram) added to the filter at a time."""


def build_contains_index(dataset: str | Path) -> Path:
    """Bloom filter of the 50-character n-grams (stride 50) of every kept row of every subset.

    One pass normalises and hashes every text, spilling the digests (16 bytes per 50 characters) to a scratch
    file; the filter, sized from their count, is then filled from that file.
    """
    dataset = Path(dataset)
    shards = sorted((dataset / "data").glob("*/*.parquet"))
    (dataset / BITS).parent.mkdir(parents=True, exist_ok=True)
    scratch = (dataset / BITS).with_name("contains.digests.tmp")
    n = 0
    try:
        with open(scratch, "wb") as spill:
            for shard in shards:
                for batch in pq.ParquetFile(shard).iter_batches(columns=["content"]):
                    for digests in map(_file_digests, (t or "" for t in batch.column(0).to_pylist())):
                        spill.write(digests)
                        n += len(digests) // 16
        bloom = BloomFilter.sized(n)
        with open(scratch, "rb") as spill:
            while chunk := spill.read(DIGEST_CHUNK):
                bloom.add_digests(chunk)
    finally:
        scratch.unlink(missing_ok=True)
    np.save(dataset / BITS, bloom.bits)
    (dataset / META).write_text(json.dumps({"m": bloom.m, "k": bloom.k, "n": n, "ngram": NGRAM, "stride": STRIDE,
                                            "fp_rate": FP_RATE, "normalize": "lowercase, whitespace runs → space"}))
    return dataset / BITS


def load_bloom(dataset: str | Path) -> BloomFilter:
    """The dataset's filter, read once per version of its index (a server answers many queries)."""
    dataset = Path(dataset)
    try:
        stamp = (dataset / META).stat().st_mtime_ns
    except OSError:
        raise ArtifactError(f"{dataset} has no membership index ({META})",
                            "rebuild the dataset with this version of `codefoundry data curate`") from None
    key = (str(dataset.resolve()), stamp)
    if key not in _loaded:
        try:
            meta = json.loads((dataset / META).read_text())
            _loaded[key] = BloomFilter(np.load(dataset / BITS), meta["m"], meta["k"])
        except (OSError, ValueError, KeyError) as e:
            raise ArtifactError(f"{dataset}'s membership index cannot be read: {e}") from None
    return _loaded[key]


_loaded: dict[tuple[str, int], BloomFilter] = {}


@dataclass(frozen=True)
class Membership:
    normalized: str                  # the snippet as compared
    spans: list[tuple[int, int]]     # [start, end) in `normalized` covered by chains of stored n-grams
    windows: int                     # 50-char windows checked
    hits: int                        # windows found, chained or not (isolated ones may be false positives)
    chain_needed: int = 2            # stored n-grams in a row a span needed (more for long snippets)

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
    """Refuse a snippet too short for the index to confirm anything (it could only ever answer "not found"), or
    too long to check in bounded time and memory."""
    chars = len(normalize(snippet))
    if chars < MIN_CHARS:
        raise UserError(f"the snippet is {chars} characters after normalising (lowercase, whitespace runs as one "
                        f"space); at least {MIN_CHARS} are needed: the index confirms only runs of two consecutive "
                        f"{NGRAM}-character pieces")
    if chars > MAX_CHARS:
        raise UserError(f"the snippet is {chars:,} characters after normalising; at most {MAX_CHARS:,} are "
                        "checked at once", "split it and ask for each part")


def contains(dataset: str | Path, snippet: str, bloom: BloomFilter | None = None) -> Membership:
    """Which spans of `snippet` occur in the dataset's kept files (up to Bloom false positives)."""
    bloom = bloom or load_bloom(dataset)
    norm = normalize(snippet)
    grams = [norm[i:i + NGRAM] for i in range(len(norm) - NGRAM + 1)]
    found = bloom.contains(grams) if grams else np.zeros(0, dtype=bool)
    needed = chain_needed(len(grams), bloom.false_positive_rate)
    chained = np.zeros_like(found)
    for r in range(min(NGRAM, len(found))):    # a chain lives on one offset class: hits 50 characters apart
        chained[r::NGRAM] = run_lengths(found[r::NGRAM]) >= needed
    spans: list[tuple[int, int]] = []
    for i in np.flatnonzero(chained).tolist():
        if spans and i <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], i + NGRAM))
        else:
            spans.append((i, i + NGRAM))
    return Membership(norm, spans, len(grams), int(found.sum()), needed)


def chain_needed(windows: int, fp_rate: float) -> int:
    """Stored n-grams in a row that a chance chain reaches less than CHANCE_SPANS times over `windows` windows."""
    needed = 2
    while needed < 8 and windows * fp_rate ** needed > CHANCE_SPANS:
        needed += 1
    return needed


def run_lengths(hits: np.ndarray) -> np.ndarray:
    """For each position, the length of the run of hits it belongs to (0 for a miss)."""
    idx = np.arange(len(hits))
    start = np.maximum.accumulate(np.where(~hits, idx, -1))            # last miss at or before i
    end = np.minimum.accumulate(np.where(~hits, idx, len(hits))[::-1])[::-1]   # first miss at or after i
    return np.where(hits, end - start - 1, 0)

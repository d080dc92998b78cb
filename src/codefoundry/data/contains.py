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

Index format 2 (`contains.json` "hash": "xxh3-128") hashes each n-gram's UTF-8 bytes with xxh3-128, about 4x
cheaper than format 1's blake2b-128 (no "hash" key); both are 128-bit digests split the same way into the
filter's double hashing, so the false-positive rate is the same. An index of either format is read.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

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
HASH = "xxh3-128"
"""The n-gram digest of indexes built now (format 2)."""
LEGACY_HASH = "blake2b-128"
"""Format 1's digest: an index whose contains.json names no hash."""
DIGESTS: dict[str, Callable[[bytes], bytes]] = {
    HASH: xxhash.xxh3_128_digest,
    LEGACY_HASH: lambda gram: hashlib.blake2b(gram, digest_size=16).digest(),
}


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def _hashes(grams: list[str], digest: str = HASH) -> tuple[np.ndarray, np.ndarray]:
    return _split(b"".join(map(DIGESTS[digest], (g.encode("utf-8", "surrogatepass") for g in grams))))


def _split(digests: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The two 64-bit halves of each 16-byte digest: double hashing's h1 and h2 (odd)."""
    both = np.frombuffer(digests, dtype="<u8").reshape(-1, 2) if digests else np.zeros((0, 2), np.uint64)
    return both[:, 0], both[:, 1] | np.uint64(1)


def _positions(grams: list[str], m: int, k: int, digest: str = HASH) -> np.ndarray:
    return _digest_positions(*_hashes(grams, digest), m, k)


def _digest_positions(h1: np.ndarray, h2: np.ndarray, m: int, k: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        pos = h1[:, None] + np.arange(k, dtype=np.uint64)[None, :] * h2[:, None]  # double hashing
    return (pos % np.uint64(m)).astype(np.int64)


class BloomFilter:
    def __init__(self, bits: np.ndarray, m: int, k: int, digest: str = HASH) -> None:
        self.bits, self.m, self.k, self.digest = bits, m, k, digest

    @classmethod
    def sized(cls, n: int, fp_rate: float = FP_RATE, digest: str = HASH) -> BloomFilter:
        m = max(64, int(-max(n, 1) * math.log(fp_rate) / math.log(2) ** 2))
        k = max(1, round(m / max(n, 1) * math.log(2)))
        return cls(np.zeros((m + 7) // 8, dtype=np.uint8), m, k, digest)

    def add(self, grams: list[str]) -> None:
        self._set(_positions(grams, self.m, self.k, self.digest).reshape(-1))

    def add_digests(self, digests: bytes) -> None:
        """Add the n-grams whose 16-byte digests (`DIGESTS[self.digest]`) are concatenated in `digests`."""
        self.add_digest_chunks([digests])

    def add_digest_chunks(self, chunks: Iterable[bytes]) -> None:
        """`add_digests` of each chunk. A filter of at most MASK_BITS bits is filled as one bool per bit (plain
        stores, duplicates harmless) and packed once at the end: `np.bitwise_or.at` costs about twice as much;
        a larger filter is filled with it, so the extra memory stays bounded."""
        mask = np.unpackbits(self.bits, bitorder="little").view(bool) if self.m <= MASK_BITS else None
        for digests in chunks:
            pos = self._chunk_positions(digests)
            if mask is not None:
                mask[pos.reshape(-1).view(np.int64)] = True  # every position < m < 2**63
            else:
                np.bitwise_or.at(self.bits, (pos >> np.uint64(3)).astype(np.intp),
                                 np.left_shift(np.uint8(1), (pos & np.uint64(7)).astype(np.uint8)))
        if mask is not None:
            self.bits[:] = np.packbits(mask, bitorder="little")

    def _chunk_positions(self, digests: bytes) -> np.ndarray:
        """`_digest_positions`' positions as (k, n), probe by probe (h1 + i·h2 as a running sum, wrapping like the
        product), with fewer full-size temporaries."""
        h1, h2 = _split(digests)
        pos = np.empty((self.k, len(h1)), np.uint64)
        pos[0] = h1
        for i in range(1, self.k):
            np.add(pos[i - 1], h2, out=pos[i])
        pos %= np.uint64(self.m)
        return pos

    def _set(self, pos: np.ndarray) -> None:
        np.bitwise_or.at(self.bits, pos >> 3, (1 << (pos & 7)).astype(np.uint8))

    def contains(self, grams: list[str]) -> np.ndarray:
        pos = _positions(grams, self.m, self.k, self.digest)
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


def _file_digests(text: str, digest: Callable[[bytes], bytes], normalized: bool = False) -> bytes:
    """The digests of `_file_grams(text)`, concatenated (the plain path: any text)."""
    norm = text if normalized else normalize(text)
    stops = range(NGRAM, len(norm) + 1, STRIDE)
    if not stops:
        return b""
    grams = map(norm.__getitem__, map(slice, range(0, len(norm) - NGRAM + 1, STRIDE), stops))
    return b"".join(map(digest, map(str.encode, grams, itertools.repeat("utf-8"), itertools.repeat("surrogatepass"))))


def content_digests(texts: Iterable[str | None], digest: str = HASH) -> tuple[bytes, int]:
    """The concatenated digests of every text's n-grams (`_file_grams`, None as empty) and their count.

    With stride = n-gram, a text's n-grams are its normalised text cut into consecutive pieces: an ASCII text's
    pieces are gathered into one buffer and read back as fixed-width bytes by numpy (no slice object per n-gram);
    other texts go through `_file_digests`. The digests are not in the texts' order (a filter does not care).
    """
    fn = DIGESTS[digest]
    pieces: list[str] = []
    parts: list[bytes] = []
    for text in texts:
        norm = normalize(text or "")
        if norm.isascii() and STRIDE == NGRAM:
            pieces.append(norm[:len(norm) // NGRAM * NGRAM])
        else:
            parts.append(_file_digests(norm, fn, normalized=True))
    grams = np.frombuffer("".join(pieces).encode("ascii"), f"V{NGRAM}").tolist()
    parts.append(b"".join(map(fn, grams)))
    out = b"".join(parts)
    return out, len(out) // 16


_ASCII_FOLD = bytes(c + 32 if 65 <= c <= 90 else 32 if c in b" \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f" else c
                    for c in range(256))
"""`normalize` on ASCII bytes, byte for byte: A-Z lowered, and every ASCII character `str.split()` cuts at (the
\x1c-\x1f separators too) a space; a run of them then becomes one space, none at either end. Other bytes kept."""
WIDE_SPACES = ("\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
               "\u2028\u2029\u202f\u205f\u3000")
"""The characters beyond ASCII that `str.split()` cuts at (a test checks them against every code point)."""
_WIDE_CODES = {n: np.array(sorted(int.from_bytes(c.encode(), "big") for c in WIDE_SPACES if len(c.encode()) == n),
                           np.uint32) for n in (2, 3)}
"""Their UTF-8 encodings (2 or 3 bytes, lead byte 0xC2 or 0xE1-0xE3) as big-endian integers."""


def column_digests(column: pa.Array | pa.ChunkedArray, digest: str = HASH) -> tuple[bytes, int]:
    """`content_digests` of a string column (null as empty), normalised over byte buffers: `str.lower` and
    `str.split` made a string per word (most of the index's cost). ASCII texts are normalised in the column's own
    buffer (`_ascii_pieces`); the others are lowered by `str.lower` (which knows Unicode's case rules) and their
    spaces collapsed in one buffer of their UTF-8 bytes (`_utf8_grams`)."""
    if STRIDE != NGRAM:
        return content_digests(column.to_pylist(), digest)
    fn = DIGESTS[digest]
    parts: list[bytes] = []
    for array in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
        pieces, others = _ascii_pieces(array)
        parts.append(b"".join(map(fn, pieces.view(f"V{NGRAM}").tolist())))
        if others:
            parts.append(b"".join(map(fn, _utf8_grams(others))))
    out = b"".join(parts)
    return out, len(out) // 16


def _ascii_pieces(array: pa.Array) -> tuple[np.ndarray, list[str]]:
    """(the ASCII texts normalised and cut to whole n-grams, concatenated as bytes; the other non-null texts)."""
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise TypeError(f"content must be a string column, not {array.type}")
    n = len(array)
    if n == 0 or array.null_count == n:
        return np.zeros(0, np.uint8), []
    width = 8 if pa.types.is_large_string(array.type) else 4
    offsets = np.frombuffer(array.buffers()[1], f"<i{width}", n + 1, array.offset * width).astype(np.int64)
    base = int(offsets[0])
    offsets -= base
    data = array.buffers()[2]
    raw = memoryview(data)[base:base + int(offsets[-1])].tobytes() if data is not None else b""
    ok = np.ones(n, bool) if array.null_count == 0 else _true(array.is_valid())
    if not raw.isascii():
        ok &= _true(pc.string_is_ascii(array))
    others = [array[i].as_py() for i in np.flatnonzero(~ok & (np.diff(offsets) > 0)).tolist() if array[i].is_valid]
    out, ats, counts = _collapse(np.frombuffer(raw.translate(_ASCII_FOLD), np.uint8), offsets, ok)
    cut = [out[a:a + c // NGRAM * NGRAM] for a, c in zip(ats.tolist(), counts.tolist(), strict=True) if c >= NGRAM]
    return (np.concatenate(cut) if cut else np.zeros(0, np.uint8)), others


def _true(flags: pa.BooleanArray) -> np.ndarray:
    """Which slots of a boolean array hold true (null as false), read from its bitmaps: `to_numpy` and
    `fill_null(…, False)` would import pandas (a quarter of a second) on their first call."""
    n, offset = len(flags), flags.offset
    validity, values = flags.buffers()
    out = np.unpackbits(np.frombuffer(values, np.uint8), bitorder="little")[offset:offset + n].view(bool)
    if validity is not None and flags.null_count:
        out &= np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")[offset:offset + n].view(bool)
    return out


def _collapse(folded: np.ndarray, offsets: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`normalize`'s whitespace runs over the texts `ok` marks in a buffer whose spaces are all b" " (32), texts
    at `offsets` (from 0): (their kept bytes concatenated; each non-empty such text's start in it and its length
    without a trailing space). A byte is kept unless it is a space after a space or at a text's start."""
    keep = np.empty(len(folded), bool)
    if len(folded):
        keep[0] = True
        pairs = np.ndarray((len(folded) - 1,), np.uint16, buffer=folded, strides=(1,))  # each byte with the next
        np.not_equal(pairs, 0x2020, out=keep[1:])
    lengths = np.diff(offsets)
    live = ok & (lengths > 0)
    starts = offsets[:-1][live]
    keep[starts] = folded[starts] != 32
    for i in np.flatnonzero(~ok & (lengths > 0)).tolist():  # another text's bytes: not in the concatenation
        keep[offsets[i]:offsets[i + 1]] = False
    out = folded[keep]
    counts = np.array([np.count_nonzero(keep[a:b]) for a, b in zip(starts.tolist(), offsets[1:][live].tolist(),
                                                                     strict=True)], np.int64)
    ats = np.cumsum(counts) - counts
    if len(out):
        counts -= (counts > 0) & (out[np.maximum(ats + counts - 1, 0)] == 32)  # a trailing run left one space
    return out, ats, counts


def _utf8_grams(texts: list[str]) -> list[bytes]:
    """The UTF-8 bytes of every `_file_grams` n-gram of `texts` (any text; lone surrogates as "surrogatepass")."""
    encoded = [text.lower().encode("utf-8", "surrogatepass") for text in texts]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    folded = np.frombuffer(bytearray(b"".join(encoded).translate(_ASCII_FOLD)), np.uint8)
    padded = np.concatenate([folded, np.zeros(2, np.uint8)])
    leads = np.flatnonzero((folded == 0xC2) | ((folded >= 0xE1) & (folded <= 0xE3)))  # never a continuation byte
    code = padded[leads].astype(np.uint32) << 8 | padded[leads + 1]
    for size in (2, 3):
        if size == 3:
            code = code << 8 | padded[leads + 2]
        wide = _WIDE_CODES[size]  # sorted; not np.isin, which imports numpy.ma
        hits = leads[wide[np.minimum(np.searchsorted(wide, code), len(wide) - 1)] == code]
        for j in range(size):
            folded[hits + j] = 32
    out, ats, counts = _collapse(folded, offsets, np.ones(len(texts), bool))
    # the bytes that continue a character (few in most texts) map characters to bytes and back: a byte's character
    # is the byte less the continuation bytes before it; character c starts at c + those up to it (`shift`)
    tails = np.flatnonzero((out & 0xC0) == 0x80)
    shift = tails - np.arange(len(tails))
    first = ats - np.searchsorted(tails, ats)
    grams = (ats + counts - np.searchsorted(tails, ats + counts) - first) // NGRAM
    if not grams.any():
        return []
    total = int(grams.sum())
    chars = np.repeat(first - NGRAM * (np.cumsum(grams) - grams), grams) + NGRAM * np.arange(total)
    starts = chars + np.searchsorted(shift, chars, side="right")
    stops = chars + NGRAM + np.searchsorted(shift, chars + NGRAM, side="right")
    buf = out.tobytes()
    return list(map(buf.__getitem__, map(slice, starts.tolist(), stops.tolist())))


MASK_BITS = 1 << 27
"""The largest filter (bits) filled through a bool per bit: 128 MiB of scratch memory at most."""
DIGEST_CHUNK = 1 << 22
"""Bytes of gram digests (16 per gram) added to the filter at a time."""


class ContainsIndexWriter:
    """Builds the membership index from content batches: digests spill to a scratch file (16 bytes per 50
    characters), and the filter, sized from their count, is filled from it at `close`."""

    def __init__(self, dataset: Path) -> None:
        self.dataset = dataset
        (dataset / BITS).parent.mkdir(parents=True, exist_ok=True)
        self.scratch = (dataset / BITS).with_name("contains.digests.tmp")
        self.spill = open(self.scratch, "wb")  # noqa: SIM115 - closed in close() or abort()
        self.n = 0

    def add(self, texts: Iterable[str | None] | pa.Array | pa.ChunkedArray) -> None:
        """Add texts: a string column (`column_digests`) or any iterable of str or None."""
        if isinstance(texts, pa.Array | pa.ChunkedArray):
            digests, n = column_digests(texts)
        else:
            digests, n = content_digests(texts)
        self.spill.write(digests)
        self.n += n

    def close(self) -> Path:
        try:
            self.spill.close()
            bloom = BloomFilter.sized(self.n)
            with open(self.scratch, "rb") as spill:
                bloom.add_digest_chunks(iter(lambda: spill.read(DIGEST_CHUNK), b""))
        finally:
            self.scratch.unlink(missing_ok=True)
        np.save(self.dataset / BITS, bloom.bits)
        (self.dataset / META).write_text(json.dumps({
            "m": bloom.m, "k": bloom.k, "n": self.n, "ngram": NGRAM, "stride": STRIDE, "fp_rate": FP_RATE,
            "normalize": "lowercase, whitespace runs → space", "hash": HASH, "format": 2}))
        return self.dataset / BITS

    def abort(self) -> None:
        self.spill.close()
        self.scratch.unlink(missing_ok=True)


def build_contains_index(dataset: str | Path) -> Path:
    """Bloom filter of the 50-character n-grams (stride 50) of every kept row of every subset."""
    dataset = Path(dataset)
    writer = ContainsIndexWriter(dataset)
    try:
        for shard in sorted((dataset / "data").glob("*/*.parquet")):
            for batch in pq.ParquetFile(shard).iter_batches(columns=["content"]):
                writer.add(batch.column(0))
    except BaseException:
        writer.abort()
        raise
    return writer.close()


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
            digest = meta.get("hash", LEGACY_HASH)
            if digest not in DIGESTS:
                raise ValueError(f"unknown n-gram hash {digest!r} (made by a newer version?)")
            _loaded[key] = BloomFilter(np.load(dataset / BITS), meta["m"], meta["k"], digest)
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

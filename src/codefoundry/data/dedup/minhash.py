"""MinHash signatures of code, vectorized with numpy over a whole batch of documents at once.

BigCode's recipe (bigcode-dataset `near_deduplication/minhash_deduplication.py`): split on
`[^A-Za-z_0-9]`, shingle 5 consecutive tokens, hash each shingle, keep the minimum under
256 hash permutations. The same, without a Python loop per token or per document:

    bytes of all docs, b"\\0"-separated     ─▶ alphanumeric mask ─▶ token (start, end) spans
    polynomial hash of every span          (prefix sums mod 2^64, one pass over the bytes)
    shingle hash = mix(Σ token_hash[i+k]·P_k)   for the n tokens of each window inside one doc
    signature[d, p] = min over doc d's shingles of (a_p·s + b_p) mod 2^64, top 32 bits

The permutations are multiply–add in uint64 (the multiply-shift family; datasketch uses
(a·h+b) mod (2^61−1)). Shingle hashes are fixed functions of the text, so signatures do not
depend on batch boundaries or on the process that computes them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

U64 = np.uint64
_M1, _M2 = U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)  # splitmix64 finalizer
CHUNK_BYTES = 1 << 22             # bytes per vectorized pass (bounds the temporary arrays)
CHUNK_ROWS = 2048                 # shingles per permutation block (rows × num_perm uint64 temporaries)

_ALNUM_TABLE = bytes(1 if chr(i) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_" else 0
                     for i in range(256))  # bigcode-dataset NON_ALPHA = [^A-Za-z_0-9]


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise on uint64 (wraps mod 2^64)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> U64(30))
        x = x * _M1
        x = x ^ (x >> U64(27))
        x = x * _M2
        return x ^ (x >> U64(31))


_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=U64)  # low k bytes
_ROUND = U64(0x9E3779B97F4A7C15)


def _mix64_inplace(x: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """`mix64(x)` written into `x` with one scratch array `tmp` of the same shape: a fresh temporary per operation
    costs its allocation and pages (kernel time) besides the arithmetic."""
    with np.errstate(over="ignore"):
        for shift, mult in ((30, _M1), (27, _M2), (31, None)):
            np.right_shift(x, U64(shift), out=tmp)
            x ^= tmp
            if mult is not None:
                x *= mult
    return x


def token_hashes(raw: bytes, padding: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hashes and start offsets of the `[A-Za-z_0-9]+` tokens of a byte string.

    A token's hash folds its bytes 8 at a time (unaligned little-endian loads) and its length,
    then mixes: exact for tokens of any length, one vectorized round per 8 bytes of the
    longest token still pending. `padding`: zero bytes at the end of `raw` that are not part of it (the loads
    past its end need 8: with fewer, a padded copy is made).
    """
    n = len(raw) - padding
    if not n:
        return np.empty(0, U64), np.empty(0, np.int64)
    if padding < 8:
        raw = raw[:n] + bytes(8)
    word = np.frombuffer(raw.translate(_ALNUM_TABLE), dtype=np.bool_, count=n)
    # word/non-word changes alternate: starts and ends from one pass (a token at either end adds its edge)
    edges = np.flatnonzero(word[1:] != word[:-1])
    edges += 1
    if word[0]:
        edges = np.concatenate([[0], edges])
    if word[-1]:
        edges = np.concatenate([edges, [len(word)]])
    starts, ends = edges[0::2], edges[1::2]
    if not len(starts):
        return np.empty(0, U64), np.empty(0, np.int64)
    words = np.ndarray((n + 1,), dtype="<u8", buffer=raw, strides=(1,))  # 8 bytes at every offset
    lengths = ends - starts
    with np.errstate(over="ignore"):
        h = lengths.astype(U64)
        h *= _ROUND
        head = words[starts]
        head &= _MASKS[np.minimum(lengths, 8)]
        h ^= head
        h *= _M1
        todo = np.flatnonzero(lengths > 8)
        offset = 8
        while len(todo):
            rem = lengths[todo] - offset
            h[todo] = (h[todo] ^ (words[starts[todo] + offset] & _MASKS[np.minimum(rem, 8)])) * _M1
            todo = todo[rem > 8]
            offset += 8
    return _mix64_inplace(h, head), np.ascontiguousarray(starts)


@dataclass(frozen=True)
class Permutations:
    """`num_perm` hash permutations (a·x + b mod 2^64, a odd) drawn from `seed`."""

    a: np.ndarray  # [num_perm] uint64
    b: np.ndarray  # [num_perm] uint64

    @classmethod
    def make(cls, num_perm: int, seed: int = 42) -> Permutations:  # seed 42: bigcode-dataset
        rng = np.random.default_rng(seed)
        a = rng.integers(0, 2**63, num_perm, dtype=np.uint64) * U64(2) + U64(1)
        b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)
        return cls(a, b)


def _utf8_docs(texts: Sequence[str] | pa.Array | pa.ChunkedArray) -> tuple[list[bytes | memoryview], np.ndarray]:
    """Each text's UTF-8 bytes (null as empty) and their lengths. An Arrow string column is sliced from its own
    buffer: no Python string per row and no encode (Arrow holds valid UTF-8, which is what encoding gives)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    if isinstance(texts, pa.Array):
        if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
            raise TypeError(f"texts must be strings, not {texts.type}")
        if texts.null_count:
            texts = pc.fill_null(texts, "")
        _, offsets_buf, data_buf = texts.buffers()
        width = np.int64 if pa.types.is_large_string(texts.type) else np.int32
        offsets = np.frombuffer(offsets_buf, dtype=width, count=len(texts) + 1, offset=texts.offset * width().itemsize)
        data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
        bounds = offsets.tolist()
        return [data[lo:hi] for lo, hi in itertools.pairwise(bounds)], np.diff(offsets).astype(np.int64)
    parts = [t.encode("utf-8", "surrogatepass") for t in texts]
    return parts, np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))


def shingle_hashes(texts: Sequence[str] | pa.Array | pa.ChunkedArray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every `ngram`-token window of each text: (hashes [m] uint64, doc index [m] int64).

    Windows never cross documents; a text with fewer than `ngram` tokens has none. `texts` may be an
    Arrow string column (nulls count as empty texts): the same hashes, without a Python string per row.
    """
    out_h: list[np.ndarray] = []
    out_d: list[np.ndarray] = []
    weights = mix64(np.arange(1, ngram + 1, dtype=U64))
    parts, sizes = _utf8_docs(texts)
    ends = np.cumsum(sizes + 1)
    i = 0
    while i < len(parts):
        # a chunk of whole documents, ≈ CHUNK_BYTES of text (one long document is a chunk alone)
        first = i
        base = int(ends[i - 1]) if i else 0
        i = max(i + 1, int(np.searchsorted(ends, base + CHUNK_BYTES + 1, side="left")))
        raw = b"\0".join([*parts[first:i], bytes(8)])  # each document ends with a 0 byte, then the loads' padding
        th, starts = token_hashes(raw, padding=8)
        if len(th) < ngram:
            continue
        # tokens never cross a document's 0 byte: each document's tokens are those starting before its end
        per_doc = np.diff(np.searchsorted(starts, ends[first:i] - base), prepend=0)
        tok_doc = np.repeat(np.arange(i - first, dtype=np.int64), per_doc)
        m = len(th) - ngram + 1
        valid = tok_doc[:m] == tok_doc[ngram - 1:]
        with np.errstate(over="ignore"):
            acc = th[:m] * weights[0]
            tmp = np.empty_like(acc)
            for k in range(1, ngram):
                np.multiply(th[k:k + m], weights[k], out=tmp)
                acc += tmp
        kept = acc[valid]
        out_h.append(_mix64_inplace(kept, tmp[: len(kept)]))
        out_d.append(tok_doc[:m][valid] + first)
    if not out_h:
        return np.empty(0, U64), np.empty(0, np.int64)
    return np.concatenate(out_h), np.concatenate(out_d)


def signatures(texts: Sequence[str], ngram: int, num_perm: int, seed: int = 42,
               method: str = "one_permutation") -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures: (sig [n_docs, num_perm] uint32, has_shingles [n_docs] bool).

    Rows of documents without any shingle are all 0xFFFFFFFF and flagged False. Both methods
    give `num_perm` values per document whose collision probability is the Jaccard similarity.
    """
    return signatures_of(*shingle_hashes(texts, ngram), len(texts), num_perm, seed, method)


def signatures_of(hashes: np.ndarray, docs: np.ndarray, n_docs: int, num_perm: int, seed: int = 42,
                  method: str = "one_permutation") -> tuple[np.ndarray, np.ndarray]:
    """`signatures` from shingle hashes already computed (`shingle_hashes`)."""
    if method == "permutations":
        sig = permutation_minhash(hashes, docs, n_docs, Permutations.make(num_perm, seed))
    elif method == "one_permutation":
        sig = one_permutation_minhash(hashes, docs, n_docs, num_perm, seed)
    else:
        raise ValueError(f"minhash method must be 'one_permutation' or 'permutations', given {method!r}")
    has = np.zeros(n_docs, dtype=bool)
    has[docs] = True
    return sig, has


def permutation_minhash(hashes: np.ndarray, docs: np.ndarray, n_docs: int, perms: Permutations) -> np.ndarray:
    """Classic MinHash: the minimum of each of `num_perm` permutations (O(shingles × num_perm))."""
    sig = np.full((n_docs, len(perms.a)), np.iinfo(U64).max, dtype=U64)
    a, b = perms.a[None, :], perms.b[None, :]
    with np.errstate(over="ignore"):
        for lo in range(0, len(hashes), CHUNK_ROWS):
            h = hashes[lo:lo + CHUNK_ROWS, None] * a
            h += b
            d = docs[lo:lo + CHUNK_ROWS]
            seg = np.flatnonzero(np.concatenate([[True], d[1:] != d[:-1]]))
            mins = np.minimum.reduceat(h, seg, axis=0)
            ids = d[seg]
            np.minimum(sig[ids], mins, out=mins)  # a document may continue from the previous block
            sig[ids] = mins
    return (sig >> U64(32)).astype(np.uint32)


def one_permutation_minhash(hashes: np.ndarray, docs: np.ndarray, n_docs: int, num_perm: int,
                            seed: int = 42) -> np.ndarray:
    """One-permutation MinHash with optimal densification (Li et al. 2012; Shrivastava, ICML 2017).

    One hash per shingle (O(shingles)): its high bits choose one of `num_perm` bins, its low
    32 bits compete for that bin's minimum. An empty bin j borrows the value of the first
    non-empty bin along a probe sequence that depends only on (j, attempt, seed), so two
    documents borrow alike and each bin still collides with probability = Jaccard.
    """
    full = np.uint32(0xFFFFFFFF)
    sig = np.full(n_docs * num_perm, full, dtype=np.uint32)
    with np.errstate(over="ignore"):
        keyed = hashes ^ (U64(seed) * _ROUND)
        tmp = np.empty_like(keyed)
        _mix64_inplace(keyed, tmp)
    slot = np.right_shift(keyed, U64(32), out=tmp)  # the bin: high 32 bits × num_perm >> 32, then its row's offset
    slot *= U64(num_perm)
    slot >>= U64(32)
    slot = slot.view(np.int64)  # < num_perm: the same value as int64
    slot += docs * num_perm
    np.minimum.at(sig, slot, keyed.astype(np.uint32))  # the low 32 bits compete
    sig = sig.reshape(n_docs, num_perm)
    present = np.zeros(n_docs, dtype=bool)
    present[docs] = True
    filled = np.zeros((n_docs, num_perm), dtype=bool)
    filled.reshape(-1)[slot] = True
    d_idx, j_idx = np.nonzero(~filled & present[:, None])
    if len(d_idx):
        probes = _probe_table(num_perm, seed)
        chosen = np.empty(len(d_idx), dtype=np.int64)
        pending = np.arange(len(d_idx))
        attempt, block = 0, 4
        while len(pending):  # blocks of attempts (growing): the first non-empty bin along each probe sequence
            cand = probes[j_idx[pending], attempt:attempt + block]
            ok = filled[d_idx[pending, None], cand]
            hit = ok.any(axis=1)
            chosen[pending[hit]] = cand[hit, ok[hit].argmax(axis=1)]
            pending = pending[~hit]
            attempt, block = attempt + block, block * 2
        sig[d_idx, j_idx] = sig[d_idx, chosen]  # chosen bins are non-empty: none of them is written here
    return sig


@cache
def _probe_table(num_perm: int, seed: int) -> np.ndarray:
    """The bin each empty bin j tries at attempt 1, 2, …: [num_perm, 9 * num_perm]; hashed for the first
    8 * num_perm attempts, then the next bins circularly (a pathological fallback that always ends)."""
    j = np.arange(num_perm, dtype=U64)[:, None]
    attempt = np.arange(1, 8 * num_perm + 1, dtype=U64)[None, :]
    with np.errstate(over="ignore"):
        probe = mix64(j * _ROUND + attempt * _M2 + U64(seed))
    hashed = ((probe >> U64(32)) * U64(num_perm) >> U64(32)).astype(np.int64)
    circular = (np.arange(num_perm)[:, None] + np.arange(1, num_perm + 1)[None, :]) % num_perm
    return np.concatenate([hashed, circular], axis=1)


def shingle_sets(texts: Sequence[str], ngram: int) -> list[np.ndarray]:
    """Each text's set of shingle hashes (sorted unique uint64), for exact Jaccard."""
    hashes, offsets = unique_per_doc(*shingle_hashes(texts, ngram), len(texts))
    return [hashes[offsets[i]:offsets[i + 1]] for i in range(len(texts))]


def unique_per_doc(hashes: np.ndarray, docs: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique hashes of each document, concatenated, and offsets [n_docs + 1] into them.

    `docs` must be non-decreasing (as `shingle_hashes` returns them).
    """
    bounds = np.searchsorted(docs, np.arange(n_docs + 1))
    out = np.empty_like(hashes)
    for i in range(n_docs):
        lo, hi = bounds[i], bounds[i + 1]
        if hi > lo:
            out[lo:hi] = np.sort(hashes[lo:hi])
    fresh = np.ones(len(out), dtype=bool)
    fresh[1:] = (out[1:] != out[:-1]) | (docs[1:] != docs[:-1])
    kept_before = np.concatenate([[0], np.cumsum(fresh)])
    return out[fresh], kept_before[bounds]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted unique hash arrays (0 when both are empty)."""
    if not len(a) and not len(b):
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


@cache
def optimal_param(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5,
                  ) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false-positive + false-negative areas of the LSH S-curve.

    As datasketch / bigcode-dataset `optimal_param` (integrals by the trapezoid rule): 0.7/256 → (25, 10).
    """
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=np.float64)
    b, r = pairs[:, :1], pairs[:, 1:]

    def area(lo: float, hi: float, fn: bool) -> np.ndarray:
        # 201 points: the same (bands, rows) as 1001 for thresholds 0.5–0.95, 128–256 hashes and FP weights
        # 0.05–0.5 (checked), at a fifth of the cost — this runs once per dedup run, before any document.
        xs = np.linspace(lo, hi, 201)[None, :]
        p = 1 - (1 - xs ** r) ** b
        ys = 1 - p if fn else p
        return np.sum((ys[:, 1:] + ys[:, :-1]) * 0.5 * np.diff(xs), axis=1)

    err = fp_weight * area(0.0, threshold, False) + fn_weight * area(threshold, 1.0, True)
    best = int(np.argmin(err))
    return int(pairs[best, 0]), int(pairs[best, 1])

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

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

U64 = np.uint64
_M1, _M2 = U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)  # splitmix64 finalizer
_BASE = U64(0x100000001B3)        # FNV-64 prime: odd, so invertible mod 2^64
_SEP = 0                          # byte between documents (never alphanumeric)
CHUNK_BYTES = 1 << 22             # bytes per vectorized pass (bounds the temporary arrays)
CHUNK_ROWS = 2048                 # shingles per permutation block (rows × num_perm uint64 temporaries)

_ALNUM = np.zeros(256, dtype=bool)
for _c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_":
    _ALNUM[_c] = True


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise on uint64 (wraps mod 2^64)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> U64(30))
        x = x * _M1
        x = x ^ (x >> U64(27))
        x = x * _M2
        return x ^ (x >> U64(31))


@cache
def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(B^t, B^-t) for t < n, mod 2^64."""
    inv = U64(pow(int(_BASE), -1, 1 << 64))
    with np.errstate(over="ignore"):
        up = np.empty(n, dtype=U64)
        down = np.empty(n, dtype=U64)
        up[0] = down[0] = 1
        if n > 1:
            up[1:] = np.cumprod(np.full(n - 1, _BASE, dtype=U64), dtype=U64)
            down[1:] = np.cumprod(np.full(n - 1, inv, dtype=U64), dtype=U64)
    return up, down


def _pow_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    size = 1 << max(16, int(n - 1).bit_length())  # cache a few power-of-two sizes only
    up, down = _powers(size)
    return up[:n], down[:n]


def token_hashes(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hashes and start offsets of the `[A-Za-z_0-9]+` tokens of a byte buffer (uint8)."""
    word = _ALNUM[buf]
    edges = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    if not len(starts):
        return np.empty(0, U64), starts
    up, down = _pow_tables(len(buf) + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(buf) + 1, dtype=U64)
        np.cumsum(buf.astype(U64) * down[: len(buf)], dtype=U64, out=prefix[1:])
        # Σ c_t B^-t over the span, times B^start: Σ c_t B^-(t-start), independent of where the token is
        raw = (prefix[ends] - prefix[starts]) * up[starts]
        raw ^= (ends - starts).astype(U64) * U64(0x9E3779B97F4A7C15)
    return mix64(raw), starts


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


def shingle_hashes(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every `ngram`-token window of each text: (hashes [m] uint64, doc index [m] int64).

    Windows never cross documents; a text with fewer than `ngram` tokens has none.
    """
    out_h: list[np.ndarray] = []
    out_d: list[np.ndarray] = []
    weights = mix64(np.arange(1, ngram + 1, dtype=U64))
    i = 0
    while i < len(texts):
        # a chunk of whole documents, ≈ CHUNK_BYTES of text (one long document is a chunk alone)
        parts, size, first = [], 0, i
        while i < len(texts) and (not parts or size + len(texts[i]) <= CHUNK_BYTES):
            data = texts[i].encode("utf-8", "surrogatepass")
            parts.append(data)
            size += len(data) + 1
            i += 1
        buf = np.frombuffer(b"\0".join(parts) + b"\0", dtype=np.uint8)
        lengths = np.fromiter((len(p) + 1 for p in parts), dtype=np.int64, count=len(parts))
        doc_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        th, starts = token_hashes(buf)
        if len(th) < ngram:
            continue
        tok_doc = np.searchsorted(doc_start, starts, side="right") - 1
        m = len(th) - ngram + 1
        valid = tok_doc[:m] == tok_doc[ngram - 1:]
        with np.errstate(over="ignore"):
            acc = th[:m] * weights[0]
            for k in range(1, ngram):
                acc += th[k:k + m] * weights[k]
        out_h.append(mix64(acc[valid]))
        out_d.append(tok_doc[:m][valid] + first)
    if not out_h:
        return np.empty(0, U64), np.empty(0, np.int64)
    return np.concatenate(out_h), np.concatenate(out_d)


def signatures(texts: Sequence[str], ngram: int, perms: Permutations) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures: (sig [n_docs, num_perm] uint32, has_shingles [n_docs] bool).

    Rows of documents without any shingle are all 0xFFFFFFFF and flagged False.
    """
    n, p = len(texts), len(perms.a)
    sig = np.full((n, p), np.iinfo(U64).max, dtype=U64)
    hashes, docs = shingle_hashes(texts, ngram)
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
    has = np.zeros(n, dtype=bool)
    has[docs] = True
    return (sig >> U64(32)).astype(np.uint32), has


def shingle_sets(texts: Sequence[str], ngram: int) -> list[np.ndarray]:
    """Each text's set of shingle hashes (sorted unique uint64), for exact Jaccard."""
    hashes, docs = shingle_hashes(texts, ngram)
    order = np.lexsort((hashes, docs))
    hashes, docs = hashes[order], docs[order]
    bounds = np.searchsorted(docs, np.arange(len(texts) + 1))
    return [np.unique(hashes[bounds[i]:bounds[i + 1]]) for i in range(len(texts))]


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
    def area(lo: float, hi: float, fn: bool, b: int, r: int) -> float:
        xs = np.linspace(lo, hi, 1001)
        p = 1 - (1 - xs ** r) ** b
        ys = 1 - p if fn else p
        return float(np.sum((ys[1:] + ys[:-1]) * 0.5 * np.diff(xs)))

    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = fp_weight * area(0.0, threshold, False, b, r) + fn_weight * area(threshold, 1.0, True, b, r)
            if err < best_err:
                best, best_err = (b, r), err
    return best

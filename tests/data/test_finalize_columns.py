"""Finalizing's column-level paths give what the per-text ones gave: the membership index's digests of a whole
string column (ASCII texts normalised over the column's buffer) are those of every text's n-grams, one by one."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pyarrow as pa
import pytest

from codefoundry.data.contains import DIGESTS, HASH, LEGACY_HASH, _file_grams, column_digests, content_digests

# every character str.split() cuts at among ASCII (\x1c-\x1f too), and some beyond it
SPACES = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u2000", "\u3000"]
WORDS = ["def", "Return", "X", "self.VALUE", "ÜnÏcode", "名前", "é", "İ", "ß", "\x00", "\x7f", "A" * 60, "{", "}",
         "Z@[`", "\x01\x1b!"]


def _texts(seed: int, n: int) -> list[str | None]:
    rng = random.Random(seed)
    texts: list[str | None] = []
    for _ in range(n):
        words = WORDS if rng.random() < 0.3 else [w for w in WORDS if w.isascii()]
        spaces = SPACES if rng.random() < 0.3 else SPACES[:10]
        lead = "".join(rng.choice(spaces) for _ in range(rng.choice([0, 0, 1, 5])))
        texts.append(lead + "".join(rng.choice(words) + "".join(rng.choice(spaces) for _ in range(rng.randint(0, 3)))
                                    for _ in range(rng.randint(0, 300))))
        if rng.random() < 0.1:
            texts.append(None)
    texts += [None, "", " ", "\n\n\t", "\x1c" * 80, "\x1f a" * 40]
    texts += ["x" * k for k in (49, 50, 51, 99, 100, 101)]
    texts += [" " * 3 + "y" * k + "\n" * 2 for k in (49, 50, 100, 150)]
    texts += ["Y" * k + " " for k in (49, 50, 51)] + [" " + "Y" * k for k in (49, 50, 51)]
    texts += ["é" * k for k in (49, 50, 101)] + ["a" * 49 + "é" + "b" * 60]
    return texts


def _plain(texts: list[str | None], digest: str) -> list[bytes]:
    """Every `_file_grams` n-gram of every text, encoded and hashed one by one."""
    return [DIGESTS[digest](g.encode("utf-8")) for t in texts for g in _file_grams(t or "")]


def _sorted_digests(out: bytes) -> list[bytes]:
    return sorted(out[i:i + 16] for i in range(0, len(out), 16))


@pytest.mark.parametrize("digest", [HASH, LEGACY_HASH])
@pytest.mark.parametrize("kind", ["string", "large_string", "sliced", "chunked", "ascii only"])
def test_column_digests_are_each_grams_digest(digest: str, kind: str) -> None:
    texts = _texts(7, 500)
    if kind == "ascii only":
        texts = [t for t in texts if t is None or t.isascii()]
    column: pa.Array | pa.ChunkedArray = pa.array(texts, pa.large_string() if kind == "large_string" else pa.string())
    if kind == "sliced":  # an offset into the buffers, as a batch sliced from a unit's table has
        column, texts = column.slice(37, 300), texts[37:337]
    if kind == "chunked":
        cuts = [0, 0, 1, 120, 121, 300, len(texts)]
        column = pa.chunked_array([column.slice(a, b - a) for a, b in itertools.pairwise(cuts)], pa.string())
    out, n = column_digests(column, digest)
    expected = _plain(texts, digest)
    assert n == len(expected) == len(out) // 16 > 1000
    assert _sorted_digests(out) == sorted(expected)
    assert column_digests(pa.array(texts, pa.string()), digest)[1] == content_digests(texts, digest)[1]


def test_column_digests_of_empty_and_null_columns() -> None:
    for column in (pa.array([], pa.string()), pa.array([None, None], pa.string()), pa.array(["", " ", "a" * 49]),
                   pa.chunked_array([], pa.string())):
        assert column_digests(column) == (b"", 0)
    with pytest.raises(TypeError, match="string column"):
        column_digests(pa.array([1, 2]))


def test_a_null_slot_holding_bytes_adds_nothing() -> None:
    """Arrow lets a null slot span bytes of the data buffer: they belong to no text."""
    texts = ["a" * 120, "NULL SLOT " * 30, "b" * 75 + "\t" + "c" * 80, "d" * 60]
    plain = pa.array(texts, pa.string())
    validity = pa.py_buffer(np.packbits(np.array([1, 0, 1, 1], bool), bitorder="little").tobytes())
    with_null = pa.Array.from_buffers(pa.string(), 4, [validity, *plain.buffers()[1:]], null_count=1)
    assert with_null.to_pylist()[1] is None
    out, n = column_digests(with_null)
    assert n == 2 + 3 + 1 and _sorted_digests(out) == sorted(_plain([texts[0], texts[2], texts[3]], HASH))

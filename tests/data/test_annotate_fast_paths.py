"""`annotate.line_stats` works on UTF-8 bytes; it must give what Python's `str` gives, character by character:
line lengths in characters, letters and digits by `str.isalnum` (non-ASCII ones too)."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from codefoundry.data.annotate import line_stats

# 1-4 byte characters, alnum or not: é, €, ß, CJK, Arabic-Indic digit, math letter 𝔘, emoji, combining accent, NBSP
ALPHABET = ["a", "Z", "0", "_", " ", "\n", "\r\n", "\t", "é", "€", "ß", "中", "٣", "\U0001d518", "\U0001f600",
            "\u0301", "\u00a0", "Ω", "\u2160", "²", "\n\n", "x" * 40]


def _plain(text: str | None) -> tuple[float, int, float] | None:
    if text is None:
        return None
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    if not text:
        return 0.0, 0, 0.0
    avg = sum(map(len, lines)) / len(lines)
    return avg, max(map(len, lines)), sum(c.isalnum() for c in text) / len(text)


def _texts() -> list[str | None]:
    rng = random.Random(5)
    texts: list[str | None] = ["", None, "\n", "é", "é\n", "\n€", "a\r\nb", "\U0001f600" * 3, "x" * 63 + "é"]
    for _ in range(600):
        texts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30))))
    texts += ["ascii only\nlines\n"] * 3 + [None, ""]
    return texts


def _check(column: pa.Array | pa.ChunkedArray, texts: list[str | None]) -> None:
    avg, longest, frac = line_stats(column)
    for text, a, m, f in zip(texts, avg.to_pylist(), longest.to_pylist(), frac.to_pylist(), strict=True):
        expected = _plain(text)
        if expected is None:
            assert (a, m, f) == (None, None, None)
            continue
        assert m == expected[1], text
        assert a == pytest.approx(expected[0]), text
        assert f == pytest.approx(expected[2]), text


def test_line_stats_equal_python_str_on_non_ascii_text() -> None:
    texts = _texts()
    assert sum(1 for t in texts if t and not t.isascii()) > 400
    _check(pa.array(texts, pa.string()), texts)
    _check(pa.array(texts, pa.large_string()), texts)


def test_line_stats_on_slices_and_chunks() -> None:
    texts = _texts()
    column = pa.array(texts, pa.string())
    _check(column.slice(7, 300), texts[7:307])  # offsets not starting at the buffer's start
    _check(pa.chunked_array([column.slice(0, 100), column.slice(100)]), texts)

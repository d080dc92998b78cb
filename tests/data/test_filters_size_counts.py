"""The size filter counts characters only in data-language rows; its reasons equal counting every row."""

from __future__ import annotations

import random

import pyarrow as pa

from codefoundry.data.filters import SizeFilter, SizeFilterConfig


def straightforward(langs: list[str | None], texts: list[str | None], config: SizeFilterConfig) -> list[str | None]:
    out: list[str | None] = []
    for lang, text in zip(langs, texts, strict=True):
        n = len(text or "")
        data = lang in config.languages
        out.append("size:too_small" if data and n < config.min_chars else
                   "size:too_large" if data and n > config.max_chars else None)
    return out


def test_size_reasons_equal_a_count_of_every_row() -> None:
    rng = random.Random(3)
    langs = [rng.choice(["JSON", "YAML", "Python", None, "Markdown"]) for _ in range(600)]
    pieces = ["a", "é", "€", "😀", "\n", " "]
    texts = [None if rng.random() < 0.05 else "".join(rng.choice(pieces) for _ in range(rng.choice(
        [0, 1, 99, 100, 101, 4999, 5000, 5001, rng.randint(0, 6000)]))) for _ in langs]
    config = SizeFilterConfig()
    batch = pa.table({"lang": pa.array(langs, pa.string()), "content": pa.array(texts, pa.string())})
    got = list(SizeFilter(config).reasons(batch))
    assert got == straightforward(langs, texts, config)
    assert {"size:too_small", "size:too_large", None} <= set(got)
    only_code = batch.filter(pa.array([lang not in config.languages for lang in langs]))
    assert list(SizeFilter(config).reasons(only_code)) == [None] * only_code.num_rows

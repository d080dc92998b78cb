"""The license matcher's cheaper paths give what the plain ones gave: `normalize` unifies spellings by slices
between the words to unify, as the word-by-word loop did."""

from __future__ import annotations

import random
from importlib import resources

from codefoundry.data.license import match


def plain_normalize(text: str) -> list[str]:
    text = match._COPYRIGHT_LINE.sub(" ", text.replace("\r", ""))
    text = match._BULLET.sub(" ", text).lower()
    words: list[str] = []
    for w in match._WORD.findall(text):
        words.extend(match._SPELLING.get(w, w).split())
    return words


def test_normalize_unifies_spellings_as_the_word_loop():
    root = resources.files("codefoundry.data.license").joinpath("texts")
    texts = [e.read_text(encoding="utf-8") for e in root.iterdir() if e.name.endswith(".txt")]
    spellings = list(match._SPELLING)
    rng = random.Random(5)
    words = ["the", "software", "Licence", "HTTP", "www", "non", "ünïcode", "x1", "", "\r\n", "-", "(c)"]
    for _ in range(400):
        texts.append(" ".join(rng.choice(words + spellings) for _ in range(rng.randint(0, 12))))
    texts += ["", "licence", "https www http", "licence licences", "Sublicense\r\nnoninfringement.",
              "see https://www.example.org/licence", "Copyright (c) 2024 licence holders\nlicence"]
    for spelling in spellings:  # first, last, alone, twice in a row
        texts += [f"{spelling} a b", f"a b {spelling}", spelling, f"{spelling} {spelling}"]
    unified = 0
    for text in texts:
        expected = plain_normalize(text)
        assert match.normalize(text) == expected, text
        unified += expected != match._WORD.findall(text.lower())
    assert unified > 100  # spellings were there to unify

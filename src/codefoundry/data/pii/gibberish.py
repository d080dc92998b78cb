"""A character-bigram gibberish detector, trained on English text that codefoundry ships.

`gibberish-detector` (BigCode's choice in `pii/utils/keys_detection.py`) ships no model: its
`big.model` must be trained. This is the same method (rrenaud's Gibberish-Detector: a Markov
chain over `a–z` and space, average log transition probability) trained on the license texts
in `codefoundry/data/license/texts/` — plain English prose that every install has. The
threshold sits between the lowest-scoring English lines of that text and the highest-scoring
random strings (seeded), as the original calibrates between good and bad examples.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import string
from collections import Counter
from functools import cache
from importlib import resources

ALPHABET = string.ascii_lowercase + " "
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_WORDS = re.compile(r"[^a-z ]+")


def _normalize(text: str) -> str:
    return " ".join(_WORDS.sub(" ", text.lower()).split())


def _training_text() -> str:
    texts = resources.files("codefoundry.data.license").joinpath("texts")
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(texts.iterdir(), key=lambda p: p.name)
                     if p.name.endswith(".txt"))


class Gibberish:
    """`score(text)`: mean bigram probability (higher = more English-like); `is_gibberish(text)`."""

    def __init__(self, corpus: str) -> None:
        n = len(ALPHABET)
        counts = [[10.0] * n for _ in range(n)]  # additive smoothing, as Gibberish-Detector
        for (a, b), c in Counter(itertools.pairwise(_normalize(corpus))).items():
            counts[_INDEX[a]][_INDEX[b]] += c
        self.logp = [[math.log(c / sum(row)) for c in row] for row in counts]
        # the same numbers keyed by the two characters: one lookup per bigram in `score`
        self._bigram_logp = {a + b: self.logp[i][j] for a, i in _INDEX.items() for b, j in _INDEX.items()}
        good = sorted(self._score(norm) for norm in map(_normalize, corpus.splitlines()) if len(norm) >= 20)
        rng = random.Random(0)
        chars = string.ascii_letters + string.digits
        bad = sorted(self.score("".join(rng.choice(chars) for _ in range(rng.randint(16, 48)))) for _ in range(500))
        self.threshold = (good[len(good) // 100] + bad[-len(bad) // 100]) / 2

    def score(self, text: str) -> float:
        return self._score(_normalize(text))

    def _score(self, norm: str) -> float:
        if len(norm) < 2:
            return 0.0
        total = sum(map(self._bigram_logp.__getitem__, map(str.__add__, norm, norm[1:])))  # in order, as pairwise
        return math.exp(total / (len(norm) - 1))

    def is_gibberish(self, text: str) -> bool:
        return self.score(text) < self.threshold


@cache
def detector() -> Gibberish:
    return Gibberish(_training_text())

"""A character-bigram gibberish detector, trained on English text that codefoundry ships.

`gibberish-detector` (BigCode's choice in `pii/utils/keys_detection.py`) ships no model: its
`big.model` must be trained. This is the same method (rrenaud's Gibberish-Detector: a Markov
chain over `a–z` and space, average log transition probability) trained on the license texts
in `codefoundry/data/license/texts/` — plain English prose that every install has. The
threshold sits between the lowest-scoring English lines of that text and the highest-scoring
random strings (seeded), as the original calibrates between good and bad examples.

Training takes ~0.1 s, in every process that redacts: `gibberish_model.json` holds its result
with the SHA-256 of the text it was trained on, and is used only while that text is unchanged
(else the detector trains as before). Regenerate it with
`python -c "from codefoundry.data.pii.gibberish import write_model; write_model()"`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
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

    def __init__(self, corpus: str | None, saved: dict | None = None) -> None:
        if saved is not None:  # a trained model's numbers (`saved_model`)
            self._set(saved["logp"])
            self.threshold = saved["threshold"]
            return
        assert corpus is not None
        n = len(ALPHABET)
        counts = [[10.0] * n for _ in range(n)]  # additive smoothing, as Gibberish-Detector
        for (a, b), c in Counter(itertools.pairwise(_normalize(corpus))).items():
            counts[_INDEX[a]][_INDEX[b]] += c
        self._set([[math.log(c / sum(row)) for c in row] for row in counts])
        good = sorted(self._score(norm) for norm in map(_normalize, corpus.splitlines()) if len(norm) >= 20)
        rng = random.Random(0)
        chars = string.ascii_letters + string.digits
        bad = sorted(self.score("".join(rng.choice(chars) for _ in range(rng.randint(16, 48)))) for _ in range(500))
        self.threshold = (good[len(good) // 100] + bad[-len(bad) // 100]) / 2

    def _set(self, logp: list[list[float]]) -> None:
        self.logp = logp
        # the same numbers keyed by the two characters: one lookup per bigram in `score`
        self._bigram_logp = {a + b: logp[i][j] for a, i in _INDEX.items() for b, j in _INDEX.items()}

    def score(self, text: str) -> float:
        return self._score(_normalize(text))

    def _score(self, norm: str) -> float:
        if len(norm) < 2:
            return 0.0
        total = sum(map(self._bigram_logp.__getitem__, map(str.__add__, norm, norm[1:])))  # in order, as pairwise
        return math.exp(total / (len(norm) - 1))

    def is_gibberish(self, text: str) -> bool:
        return self.score(text) < self.threshold


MODEL = "gibberish_model.json"


def saved_model() -> dict:
    """The trained model as `gibberish_model.json` stores it (floats as `repr` writes them: read back exactly)."""
    corpus = _training_text()
    model = Gibberish(corpus)
    return {"corpus_sha256": hashlib.sha256(corpus.encode()).hexdigest(), "logp": model.logp,
            "threshold": model.threshold}


def model_for(corpus: str, saved: dict) -> Gibberish:
    """The saved model if it was trained on `corpus`, else one trained now."""
    if saved.get("corpus_sha256") == hashlib.sha256(corpus.encode()).hexdigest():
        return Gibberish(None, saved)
    return Gibberish(corpus)


@cache
def detector() -> Gibberish:
    saved = json.loads(resources.files("codefoundry.data.pii").joinpath(MODEL).read_text(encoding="utf-8"))
    return model_for(_training_text(), saved)


def write_model() -> None:
    """Train on the shipped texts and write `gibberish_model.json` next to this module."""
    path = resources.files("codefoundry.data.pii").joinpath(MODEL)
    path.write_text(json.dumps(saved_model()) + "\n", encoding="utf-8")  # type: ignore[attr-defined]

"""Identify licenses in a text by matching it against reference license texts.

Texts are normalized (lower case, words only, copyright/author lines dropped, British
spellings and bullets unified), then cut into word bigrams. A reference matches when at
least `threshold` of its bigrams occur in the document, so reflowed text, changed names,
copyright lines and small edits still match. A document may hold several licenses: the
best-explaining reference is taken first and its bigrams removed from the document, then
the next, so BSD-2-Clause is not reported inside BSD-3-Clause, nor GPL-3.0 inside AGPL-3.0.
(The idea follows go-license-detector, which The Stack v1 used: normalize, then compare.)
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

_COPYRIGHT_LINE = re.compile(r"^\W*(copyright\b|\(c\)|©|all rights reserved|author|written by).*$",
                             re.IGNORECASE | re.MULTILINE)
_WORD = re.compile(r"[a-z0-9]+")
_BULLET = re.compile(r"^\s*(\(?[0-9a-z]{1,2}[.)]|[-*•])\s+", re.MULTILINE)
_SPELLING = {"licence": "license", "licences": "licenses", "licenced": "licensed", "favour": "favor",
             "organisation": "organization", "nonexclusive": "non exclusive", "sublicense": "sub license",
             "noninfringement": "non infringement", "http": "", "https": "", "www": ""}
DEFAULT_THRESHOLD = 0.75
"""Share of a reference's bigrams a document must contain (tuned on the venv's distributions:
bench/license_agreement.py)."""


def normalize(text: str) -> list[str]:
    """The words of a license text, without copyright lines, bullets and punctuation."""
    text = _COPYRIGHT_LINE.sub(" ", text.replace("\r", ""))
    text = _BULLET.sub(" ", text).lower()
    words: list[str] = []
    for w in _WORD.findall(text):
        words.extend(_SPELLING.get(w, w).split())
    return words


def bigrams(words: list[str]) -> frozenset[str]:
    return frozenset(f"{a} {b}" for a, b in itertools.pairwise(words))


@dataclass(frozen=True)
class Reference:
    spdx: str      # SPDX id this text identifies
    name: str      # file name in texts/ (e.g. "Apache-2.0.notice.txt")
    grams: frozenset[str]


@cache
def references() -> tuple[Reference, ...]:
    """Every reference text shipped in `license/texts/`, sorted by file name."""
    folder = resources.files("codefoundry.data.license").joinpath("texts")
    refs = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".txt"):
            spdx = entry.name.removesuffix(".txt").removesuffix(".notice")
            refs.append(Reference(spdx, entry.name, bigrams(normalize(entry.read_text(encoding="utf-8")))))
    return tuple(refs)


def _best_window(doc: list[str | None], ref: Reference) -> tuple[int, int, int]:
    """(distinct reference bigrams, first, last doc position) of the densest stretch of `doc` no longer
    than 1.5× the reference: a match must be one place in the document, not words collected from all over."""
    width = int(len(ref.grams) * 1.5) + 10
    positions = [i for i, g in enumerate(doc) if g is not None and g in ref.grams]
    counts: dict[str, int] = {}
    best, span, lo = 0, (0, -1), 0
    for hi, i in enumerate(positions):
        g = doc[i]
        counts[g] = counts.get(g, 0) + 1
        while i - positions[lo] > width:
            old = doc[positions[lo]]
            counts[old] -= 1
            if not counts[old]:
                del counts[old]
            lo += 1
        if len(counts) > best:
            best, span = len(counts), (lo, hi)
    lo, hi = span
    window: dict[str, int] = {}
    for i in positions[lo: hi + 1]:
        window[doc[i]] = window.get(doc[i], 0) + 1
    while lo < hi and window[doc[positions[lo]]] > 1:  # trim leading words that recur later in the match
        window[doc[positions[lo]]] -= 1
        lo += 1
    return (best, positions[lo], positions[hi]) if best else (0, 0, -1)


_SEPARATOR = re.compile(r"^\s*[-=_*~#]{3,}\s*$", re.MULTILINE)


def identify(text: str, threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    """SPDX ids of the licenses whose reference text `text` contains, in order of appearance.

    Sections cut by separator lines ("-----", "=====") are matched apart, as bundled-license files
    put one license per section."""
    found: list[str] = []
    for section in _SEPARATOR.split(text):
        found += [spdx for spdx in _identify_section(section, threshold) if spdx not in found]
    return found


def _identify_section(text: str, threshold: float) -> list[str]:
    words = normalize(text)
    doc: list[str | None] = [f"{a} {b}" for a, b in itertools.pairwise(words)]
    found: dict[str, int] = {}  # id → position of its first match
    while True:
        best, best_score, best_span = None, 0.0, (0, -1)
        for ref in references():
            hits, first, last = _best_window(doc, ref)
            coverage = hits / len(ref.grams)
            score = hits * coverage  # explains much of the document, and is itself mostly present
            if coverage >= threshold and score > best_score:
                best, best_score, best_span = ref, score, (first, last)
        if best is None:
            return sorted(found, key=lambda spdx: found[spdx])
        found[best.spdx] = min(found.get(best.spdx, best_span[0]), best_span[0])
        for i in range(best_span[0], best_span[1] + 1):  # that stretch is explained; look for more licenses
            doc[i] = None

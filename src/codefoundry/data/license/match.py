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
from functools import cache, lru_cache
from importlib import resources

import numpy as np

_COPYRIGHT_LINE = re.compile(  # "COPYRIGHT HOLDERS BE LIABLE" / "AUTHORS OR …" wrapped to a line start are license text
    r"^\W*(copyright\b(?!\s+(holders?|owners?|notice|and|or|law|protection)\b)|\(c\)|©|all rights reserved"
    r"|authors?\s*:|written by).*$", re.IGNORECASE | re.MULTILINE)
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
    name: str      # file name under texts/ (e.g. "Apache-2.0.notice.txt", "restricted/JSON.txt")
    grams: frozenset[str]
    length: int    # words in the normalized text (a long text repeats bigrams: more words than distinct grams)


def spdx_of(file_name: str) -> str:
    """The id a reference file identifies: "MIT.txt" → MIT, "GPL-3.0.notice.txt" → GPL-3.0, "Python-2.0.cnri.txt"
    → Python-2.0 (a word after the last dot names a variant or a section; a version's digits never do)."""
    stem = file_name.removesuffix(".txt")
    head, _, tail = stem.rpartition(".")
    return head if head and tail.isalpha() else stem


@cache
def references() -> tuple[Reference, ...]:
    """Every reference text shipped in `license/texts/` (and its folders), sorted by file name.

    texts/*.txt are the licenses of the default lists; texts/restricted/ holds licenses that restrict
    use (non-commercial, source-available, Commons Clause) so that they are named, not mistaken for a
    permissive license they contain; texts/sections/ holds parts of multi-part licenses (Python's)."""
    root = resources.files("codefoundry.data.license").joinpath("texts")
    entries = [(e.name, e) for e in root.iterdir() if e.name.endswith(".txt")]
    for folder in ("restricted", "sections"):
        entries += [(f"{folder}/{e.name}", e) for e in root.joinpath(folder).iterdir() if e.name.endswith(".txt")]
    refs = []
    for name, entry in sorted(entries, key=lambda item: item[1].name):
        words = normalize(entry.read_text(encoding="utf-8"))
        refs.append(Reference(spdx_of(entry.name), name, bigrams(words), len(words)))
    return tuple(refs)


@dataclass(frozen=True)
class _GramIndex:
    """Every reference's bigrams as ids in one array: a document's shared-bigram count with all references
    in one numpy pass instead of one set intersection per reference."""

    ids: dict[str, int]   # bigram → id
    flat: np.ndarray      # every reference's bigram ids, reference after reference
    starts: np.ndarray    # where each reference's ids start in `flat`

    def shared(self, present: frozenset[str]) -> np.ndarray:
        """For each reference (in `references()` order), how many of its bigrams are in `present`."""
        mask = np.zeros(len(self.ids) + 1, dtype=np.int64)  # the last slot: no reference has it
        mask[[self.ids[g] for g in present if g in self.ids]] = 1
        return np.add.reduceat(mask[self.flat], self.starts) if len(self.flat) else np.zeros(0, np.int64)


@cache
def _gram_index() -> _GramIndex:
    ids: dict[str, int] = {}
    flat: list[int] = []
    starts: list[int] = []
    for ref in references():
        starts.append(len(flat))
        flat += [ids.setdefault(g, len(ids)) for g in sorted(ref.grams)] or [-1]  # -1: the never-set last slot
    return _GramIndex(ids, np.array(flat, dtype=np.int64), np.array(starts, dtype=np.int64))


def _best_window(doc: list[str | None], ref: Reference) -> tuple[int, int, int]:
    """(distinct reference bigrams, first, last doc position) of the densest stretch of `doc` no longer
    than 1.5× the reference: a match must be one place in the document, not words collected from all over."""
    width = int(ref.length * 1.5) + 10
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


@dataclass(frozen=True)
class Section:
    """One separator-delimited part of a license file: what matched, and the words nothing explains.

    `extra` holds the runs of words that are neither in a matched reference nor copyright lines:
    text added before, after or inside a license (a title, a preamble, or an added clause)."""

    ids: tuple[str, ...]     # matched references, in order of appearance
    extra: tuple[str, ...]   # unexplained runs of normalized words, in order
    words: int               # normalized words in the section
    references: tuple[str, ...] = ()  # file names (under texts/) of the references that matched
    grams: frozenset[str] = frozenset()  # the section's word pairs


def examine(text: str, threshold: float = DEFAULT_THRESHOLD) -> list[Section]:
    """Match every section of a license file and keep what the matches leave unexplained.

    Sections cut by separator lines ("-----", "=====") are matched apart, as bundled-license files
    put one license per section."""
    return list(_examine(text, threshold))


@lru_cache(maxsize=256)
def _examine(text: str, threshold: float) -> tuple[Section, ...]:
    # Many repositories ship the very same license file (Apache-2.0, MIT verbatim): matched once per worker.
    return tuple(_examine_section(section, threshold) for section in _SEPARATOR.split(text))


def identify(text: str, threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    """SPDX ids of the licenses whose reference text `text` contains, in order of appearance."""
    found: list[str] = []
    for section in examine(text, threshold):
        found += [spdx for spdx in section.ids if spdx not in found]
    return found


def _examine_section(text: str, threshold: float) -> Section:
    words = normalize(text)
    doc: list[str | None] = [f"{a} {b}" for a, b in itertools.pairwise(words)]
    explained = [False] * len(words)
    found: dict[str, int] = {}  # id → position of its first match
    matched: list[str] = []
    present = frozenset(doc)
    shared = _gram_index().shared(present)
    candidates = [ref for ref, n in zip(references(), shared.tolist(), strict=True)
                  if n >= threshold * len(ref.grams)]
    while True:
        best, best_score, best_span = None, 0.0, (0, -1)
        for ref in candidates:  # the rest cannot reach the threshold even with the whole document
            hits, first, last = _best_window(doc, ref)
            coverage = hits / len(ref.grams)
            score = hits * coverage  # explains much of the document, and is itself mostly present
            if coverage >= threshold and score > best_score:
                best, best_score, best_span = ref, score, (first, last)
        if best is None:
            break
        found[best.spdx] = min(found.get(best.spdx, best_span[0]), best_span[0])
        matched.append(best.name)
        for i in range(best_span[0], best_span[1] + 1):  # that stretch is explained; look for more licenses
            if doc[i] in best.grams:  # words of the reference; words inserted into it stay unexplained
                explained[i] = explained[i + 1] = True
            doc[i] = None
    runs, current = [], []
    for word, ok in zip(words, explained, strict=True):
        if ok:
            if current:
                runs.append(" ".join(current))
            current = []
        else:
            current.append(word)
    if current:
        runs.append(" ".join(current))
    return Section(tuple(sorted(found, key=lambda spdx: found[spdx])), tuple(runs), len(words), tuple(matched),
                   present)

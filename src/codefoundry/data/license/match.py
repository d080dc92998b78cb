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
from importlib.resources.abc import Traversable

import numpy as np

from codefoundry.data.license import cache as verdict_cache

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
    found = _WORD.findall(text)
    if _SPELLING.keys().isdisjoint(found):  # most texts: no spelling to unify, the words as found
        return found
    # the few words to unify, found without a Python step per word; the words between them copied as slices
    words: list[str] = []
    done = 0
    for i in itertools.compress(itertools.count(), map(_SPELLING.__contains__, found)):
        words += found[done:i]
        words += _SPELLING[found[i]].split()
        done = i + 1
    words += found[done:]
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


def _reference_files() -> list[tuple[str, Traversable]]:
    """(name under texts/, file) of every reference text, sorted by file name (the order of `references()`)."""
    root = resources.files("codefoundry.data.license").joinpath("texts")
    entries = [(e.name, e) for e in root.iterdir() if e.name.endswith(".txt")]
    for folder in ("restricted", "sections"):
        entries += [(f"{folder}/{e.name}", e) for e in root.joinpath(folder).iterdir() if e.name.endswith(".txt")]
    return sorted(entries, key=lambda item: item[1].name)


@cache
def reference_ids() -> tuple[str, ...]:
    """The SPDX id of each reference text, in `references()` order, without reading the texts."""
    return tuple(spdx_of(entry.name) for _, entry in _reference_files())


@cache
def references() -> tuple[Reference, ...]:
    """Every reference text shipped in `license/texts/` (and its folders), sorted by file name.

    texts/*.txt are the licenses of the default lists; texts/restricted/ holds licenses that restrict
    use (non-commercial, source-available, Commons Clause) so that they are named, not mistaken for a
    permissive license they contain; texts/sections/ holds parts of multi-part licenses (Python's)."""
    refs = []
    for name, entry in _reference_files():
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
    members: dict[str, np.ndarray]  # reference file name → a mask over the ids (and -1's last slot): its bigrams

    def shared(self, present: frozenset[str]) -> np.ndarray:
        """For each reference (in `references()` order), how many of its bigrams are in `present`."""
        return self.shared_ids(np.array([self.ids[g] for g in present if g in self.ids], dtype=np.int64))

    def shared_ids(self, present: np.ndarray) -> np.ndarray:
        """`shared` of the bigrams of these ids (-1: a bigram of no reference; repeats allowed)."""
        mask = np.zeros(len(self.ids) + 1, dtype=np.int64)  # the last slot: no reference has it
        mask[present[present >= 0]] = 1
        return np.add.reduceat(mask[self.flat], self.starts) if len(self.flat) else np.zeros(0, np.int64)

    def doc_ids(self, doc: list[str | None]) -> np.ndarray:
        """Each document bigram's id (-1: none of the references has it, or the position left the document)."""
        # None is no bigram's key: `get` gives it -1 too, with no Python step per bigram
        return np.fromiter(map(self.ids.get, doc, itertools.repeat(-1)), dtype=np.int64, count=len(doc))


@cache
def _gram_index() -> _GramIndex:
    ids: dict[str, int] = {}
    flat: list[int] = []
    starts: list[int] = []
    for ref in references():
        starts.append(len(flat))
        flat += [ids.setdefault(g, len(ids)) for g in sorted(ref.grams)] or [-1]  # -1: the never-set last slot
    members = {}
    for ref in references():
        members[ref.name] = np.zeros(len(ids) + 1, dtype=bool)
        members[ref.name][[ids[g] for g in ref.grams]] = True
    return _GramIndex(ids, np.array(flat, dtype=np.int64), np.array(starts, dtype=np.int64), members)


def _width(ref: Reference) -> int:
    """The longest stretch of a document (in word positions) one match of `ref` may span."""
    return int(ref.length * 1.5) + 10


class _Windows:
    """One candidate reference's windows over a document, counted once and then only where a match changed them.

    For each document position holding one of the reference's bigrams, `count` holds how many distinct bigrams
    of it the stretch of `_width(ref)` words ending there holds (-1 once a match explained that position). The
    densest stretch is the first of the highest counts: a match must be one place in the document, not words
    collected from all over. Words only ever leave the document, so after a match only the windows reaching
    into its stretch are counted again; recounting every window of every candidate after each match made a
    document of many licenses (or one license many times) quadratic: a minute for 1.9 MB."""

    def __init__(self, doc: list[str | None], ref: Reference, doc_ids: np.ndarray | None = None) -> None:
        """`doc_ids`: `_GramIndex.doc_ids(doc)`, kept up to date by the caller (-1 where `doc` holds None); given,
        the windows are counted with numpy instead of word by word (the same counts)."""
        self.width = _width(ref)
        self.doc_ids = doc_ids
        if doc_ids is None:
            self.pos = np.array([i for i, g in enumerate(doc) if g is not None and g in ref.grams], dtype=np.int64)
        else:
            self.pos = np.flatnonzero(_gram_index().members[ref.name][doc_ids])
        self.count = np.zeros(len(self.pos), dtype=np.int32)
        self.scanned = len(doc)  # document positions gone over: the matcher's work, whatever the machine's speed
        self._best: tuple[int, int, int] | None = None
        self._recount(doc, 0, len(self.pos))

    def _recount(self, doc: list[str | None], start: int, stop: int) -> None:
        """Count again the windows ending at `pos[start:stop]` (the sliding window of distinct bigrams)."""
        if start >= stop:
            return
        if self.doc_ids is not None:
            self._recount_arrays(start, stop)
            return
        width = self.width
        lo = int(np.searchsorted(self.pos, self.pos[start] - width, "left"))
        pos = self.pos[lo:stop].tolist()  # plain ints: numpy scalars are slow one at a time
        counts: dict[str, int] = {}
        out: list[int] = []
        first = 0  # index into `pos` of the window's first word
        for j in range(start - lo):  # the window's words before the first recounted end
            if (g := doc[pos[j]]) is not None:
                counts[g] = counts.get(g, 0) + 1
        for i in pos[start - lo:]:
            g = doc[i]
            if g is None:
                out.append(-1)
                continue
            counts[g] = counts.get(g, 0) + 1
            while i - pos[first] > width:
                if (old := doc[pos[first]]) is not None:
                    counts[old] -= 1
                    if not counts[old]:
                        del counts[old]
                first += 1
            out.append(len(counts))
        self.count[start:stop] = out
        self.scanned += stop - lo
        self._best = None

    def _recount_arrays(self, start: int, stop: int) -> None:
        """`_recount` without a Python step per word. A window [L, e] (indices of the live positions, L the
        first within `width` of e's position) holds (e - L + 1) words, minus one for each word whose previous
        occurrence j' also lies in it (j' ≥ L): such a pair (j', j) counts for the ends e in [j, death), death
        being the first end whose window starts after j'. Ends and window starts both only grow, so the pairs
        alive at each end are births so far minus deaths so far: two cumulative sums."""
        width = self.width
        lo = int(np.searchsorted(self.pos, self.pos[start] - width, "left"))
        ids = self.doc_ids[self.pos[lo:stop]]
        live = np.flatnonzero(ids >= 0)
        q, g = self.pos[lo:stop][live], ids[live]
        first = np.searchsorted(q, q - width, "left")  # each live end's window start (an index into q)
        order = np.argsort(g, kind="stable")
        repeat = g[order[1:]] == g[order[:-1]]
        prev = np.full(len(q), -1, dtype=np.int64)
        prev[order[1:][repeat]] = order[:-1][repeat]
        pairs = np.flatnonzero(prev >= 0)
        death = np.searchsorted(first, prev[pairs], "right")
        alive = death > pairs
        births = np.bincount(pairs[alive], minlength=len(q)).cumsum()
        deaths = np.bincount(death[alive], minlength=len(q) + 1)[: len(q)].cumsum()
        counts = np.arange(len(q)) - first + 1 - (births - deaths)
        out = np.full(stop - lo, -1, dtype=np.int32)
        out[live] = counts
        self.count[start:stop] = out[start - lo:]
        self.scanned += stop - lo
        self._best = None

    def best(self, doc: list[str | None]) -> tuple[int, int, int]:
        """(distinct reference bigrams, first, last doc position) of the densest stretch no longer than the width."""
        if self._best is None:
            self._best = self._find(doc)
        return self._best

    def _find(self, doc: list[str | None]) -> tuple[int, int, int]:
        if not len(self.count) or (best := int(self.count.max())) <= 0:
            return 0, 0, -1
        hi = int(np.argmax(self.count))  # the first of the densest, as a left-to-right scan meets them
        lo = int(np.searchsorted(self.pos, self.pos[hi] - self.width, "left"))
        if self.doc_ids is not None:  # the first live word that does not recur later in the window starts the match
            ids = self.doc_ids[self.pos[lo: hi + 1]]
            live = self.pos[lo: hi + 1][ids >= 0]
            ids = ids[ids >= 0]
            order = np.argsort(ids, kind="stable")
            repeat = ids[order[1:]] == ids[order[:-1]]
            recurs = np.zeros(len(ids), dtype=bool)
            recurs[order[:-1][repeat]] = True
            return best, int(live[int(np.argmax(~recurs))]), int(live[-1])
        alive = [i for i in self.pos[lo: hi + 1].tolist() if doc[i] is not None]
        window: dict[str | None, int] = {}
        for i in alive:
            window[doc[i]] = window.get(doc[i], 0) + 1
        k = 0
        while k < len(alive) - 1 and window[doc[alive[k]]] > 1:  # trim leading words that recur later in the match
            window[doc[alive[k]]] -= 1
            k += 1
        return best, alive[k], alive[-1]

    def explain(self, doc: list[str | None], first: int, last: int) -> None:
        """Positions `first..last` left the document (a match took them): recount the windows that reached them."""
        start = int(np.searchsorted(self.pos, first, "left"))
        stop = int(np.searchsorted(self.pos, last + self.width, "right"))
        self._recount(doc, start, stop)


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
    scanned: int = 0  # document positions the matcher went over: its work, whatever the machine's speed


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
    return list(_identify(text, threshold))


@lru_cache(maxsize=256)
def _identify(text: str, threshold: float) -> tuple[str, ...]:
    # once per machine while the matcher is unchanged (`verdict_cache`): a run that finds every verdict there never
    # normalises the reference texts
    name = verdict_cache.entry_name("identify", text, threshold)
    found = verdict_cache.load(name)
    if found is None:
        ids: list[str] = []
        for section in examine(text, threshold):
            ids += [spdx for spdx in section.ids if spdx not in ids]
        found = tuple(ids)
        verdict_cache.store(name, found)
    return found


def _examine_section(text: str, threshold: float) -> Section:
    return _examine_words(tuple(normalize(text)), threshold)


@lru_cache(maxsize=1024)
def _examine_words(words: tuple[str, ...], threshold: float) -> Section:
    # A section is decided by its normalized words alone: files that differ only in their copyright lines (the
    # same MIT or BSD text under other names) are matched once per worker.
    doc: list[str | None] = [f"{a} {b}" for a, b in itertools.pairwise(words)]
    explained = [False] * len(words)
    found: dict[str, int] = {}  # id → position of its first match
    matched: list[str] = []
    present = frozenset(doc)
    index = _gram_index()
    doc_ids = index.doc_ids(doc)  # the bigrams as ids: the candidates' windows are counted with numpy
    shared = index.shared_ids(doc_ids)
    candidates = [ref for ref, n in zip(references(), shared.tolist(), strict=True)
                  if n >= threshold * len(ref.grams)]
    windows: dict[str, _Windows] = {}
    while True:
        best, best_score, best_span = None, 0.0, (0, -1)
        kept = []
        for ref in candidates:  # the rest cannot reach the threshold even with the whole document
            if ref.name not in windows:
                windows[ref.name] = _Windows(doc, ref, doc_ids)
            hits, first, last = windows[ref.name].best(doc)
            coverage = hits / len(ref.grams)
            if coverage < threshold:  # windows only lose words: it never reaches the threshold again
                continue
            kept.append(ref)
            score = hits * coverage  # explains much of the document, and is itself mostly present
            if score > best_score:
                best, best_score, best_span = ref, score, (first, last)
        candidates = kept
        if best is None:
            break
        found[best.spdx] = min(found.get(best.spdx, best_span[0]), best_span[0])
        matched.append(best.name)
        for i in range(best_span[0], best_span[1] + 1):  # that stretch is explained; look for more licenses
            if doc[i] in best.grams:  # words of the reference; words inserted into it stay unexplained
                explained[i] = explained[i + 1] = True
            doc[i] = None
        doc_ids[best_span[0]: best_span[1] + 1] = -1
        for ref in candidates:
            windows[ref.name].explain(doc, *best_span)
    scanned = sum(w.scanned for w in windows.values())
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
                   present, scanned)

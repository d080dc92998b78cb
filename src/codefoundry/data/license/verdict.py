"""What one license file says: the licenses it holds, whether it changes them, or that it is unknown.

A file is understood when its text is explained by reference licenses. Text that is not
(a title, a preamble, an added clause, a changed grant) is read for restrictions on use:
non-commercial, field-of-use (military, "Good, not Evil"), personal or evaluation use only,
"may not sell"; and a full permissive text is checked for the words of its grant (MIT without
"sell", BSD without "with or without modification"). A permissive license so restricted or
narrowed is not that license: the file
gives the matched ids plus `LicenseRef-modified` (ScanCode reports these as matches with extra
words). A file that matches nothing is `LicenseRef-unknown` unless it is only a copyright line,
a pointer to another file, a NOTICE without license text, or a short statement naming a license
("This project is licensed under the MIT License") which names it.
"""

from __future__ import annotations

import re
from functools import lru_cache

from codefoundry.data.license import cache
from codefoundry.data.license.match import (
    DEFAULT_THRESHOLD,
    Section,
    _gram_index,
    bigrams,
    examine,
    normalize,
    references,
)
from codefoundry.data.license.metadata import UNKNOWN, names_in
from codefoundry.data.license.names import is_notice_file

MODIFIED = "LicenseRef-modified"
"""A known license whose file adds or changes terms that restrict use."""
MARKERS = (MODIFIED, UNKNOWN)

_NEAR = r"(?:\s+\w+){0,6}\s+"  # up to six words between two parts of a phrase
RESTRICTIONS = re.compile("|".join((  # over normalized words (lower case, punctuation gone, "non-" → "non ")
    r"(?<!commercial and )(?<!commercial or )\bnon ?commercial", rf"\bnot\b{_NEAR}commercial",
    rf"\bcommercial{_NEAR}(prohibited|forbidden|not (be )?(permitted|allowed)|requires?|must obtain|strictly)\b",
    r"\bevil\b", r"\bmilitary\b", r"\bweapons?\b", r"\bwarfare\b",
    r"\b(personal|private|educational|academic|evaluation|research|internal|non profit) (use|purposes?) only\b",
    r"\b(only|solely|exclusively) (for|in) (personal|private|educational|academic|evaluation|research|internal|non "
    r"profit|non production)\b", r"\bnon production\b",
    rf"\b(may|shall|must|will) ?not{_NEAR}(use|used|sell|sold|resell|distribute|distributed|redistribute|modify|"
    r"modified|copy|copied|sublicense|host|hosted|offer|offered|provide|compete)\b",
    rf"\b(not|no) (right|permission|license){_NEAR}(sell|use|distribute|host|offer|compete)\b",
    rf"\bnot include{_NEAR}sell\b", r"\bcommons clause\b",
    r"\b(prohibited|forbidden|not permitted|not allowed)\b", r"\bretains? all (intellectual property|rights?|title)\b",
    r"\bwithout (the )?(express )?(prior )?written (permission|consent|approval)\b",
)))
_BENIGN_AFTER = re.compile(  # name-use clauses (BSD, X11, HPND) and pointers to the terms are no restriction on use
    r"^(\s+\w+){0,4}\s+(advertising|publicity|endorse|endorsement|promote)\b"
    r"|^(\s+\w+){0,10}\s+except (in compliance|according to|as permitted|as provided|under the terms|in accordance)")
_POINTER = re.compile(r"\b(see|refer to|found in|located in|included in|in the file|at)\b.*\b(licen[cs]e|copying)\b",
                      re.IGNORECASE | re.DOTALL)
_FILE_NAME = re.compile(r"\S*(licen[cs]e|copying)\S*[.\-_]\S+", re.IGNORECASE)  # LICENSE.BSD names a file
_KNOWN_TEXT = 0.8   # a run this much made of one reference's word pairs is license boilerplate, not an added term
_SHORT = 120   # words: a statement, not a license text
_TRIVIAL = 8   # words left after copyright lines: a bare copyright notice or heading


_BOILERPLATE = re.compile(  # sentences of license documents about themselves (the FSF's preambles)
    r"verbatim copies of this license document but changing it is not allowed")


def restricts_use(run: str) -> bool:
    """Does this unexplained text (normalized words) restrict what a licensee may do?"""
    run = _BOILERPLATE.sub(" ", run)
    return any(not _BENIGN_AFTER.match(run[m.end():]) for m in RESTRICTIONS.finditer(run))


def _is_known_text(run: str, matched: set[str]) -> bool:
    """Is this run mostly the words of one reference text (a part of a license that did not match whole)?
    Restricting references count only when the file matched them: they must not excuse added clauses."""
    grams = bigrams(run.split())
    if not grams:
        return False
    shared = zip(references(), _gram_index().shared(grams).tolist(), strict=True)  # |grams ∩ ref.grams| each
    if len(grams) < 3:  # a few words (a title cut off a match): only a license matched here explains them
        return any(n == len(grams) for ref, n in shared if ref.spdx in matched)
    return any(n >= _KNOWN_TEXT * len(grams) for ref, n in shared
               if ref.spdx in matched or not ref.name.startswith("restricted/"))


GRANTS = {  # word pairs of a license's grant that a narrowed copy drops ("…, distribute, sublicense" without "sell")
    "MIT.txt": ("or sell", "sell copies", "without restriction"), "ISC.txt": ("any purpose",),
    "0BSD.txt": ("any purpose",), "Zlib.txt": ("any purpose", "commercial applications"),
    "BSD-2-Clause.txt": ("without modification", "binary forms"), "BSD-3-Clause.txt": ("without modification",
                                                                                      "binary forms"),
    "Apache-2.0.txt": ("perpetual worldwide", "sub license", "and distribute"),
}


def narrowed_grant(sections: list[Section]) -> bool:
    """Does a full permissive license text lack the words of its grant (a right struck out, not added to)?"""
    return any(not all(g in section.grams for g in GRANTS.get(name, ())) for section in sections
               for name in section.references)


def added_restriction(sections: list[Section]) -> bool:
    """Does any text the matches leave unexplained restrict use (and is not itself known license text)?"""
    matched = {i for section in sections for i in section.ids}
    return any(restricts_use(run) and not _is_known_text(run, matched) for section in sections
               for run in section.extra)


def license_file_ids(path: str, text: str, threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    """The ids a license file gives its scope: matched ids (+ MODIFIED), named ids, UNKNOWN, or []."""
    return list(_file_ids(is_notice_file(path), text, threshold))


@lru_cache(maxsize=256)
def _file_ids(notice: bool, text: str, threshold: float) -> tuple[str, ...]:
    # The path counts only as a NOTICE-like name or not: the same file text in many repositories is judged once,
    # and once per machine while the matcher is unchanged (`cache`).
    name = cache.entry_name("notice" if notice else "file", text, threshold)
    ids = cache.load(name)
    if ids is None:
        ids = tuple(_decide(notice, text, threshold))
        cache.store(name, ids)
    return ids


def _decide(notice: bool, text: str, threshold: float) -> list[str]:
    sections = examine(text, threshold)
    ids: list[str] = []
    for section in sections:
        ids += [i for i in section.ids if i not in ids]
    if ids:
        return [*ids, MODIFIED] if added_restriction(sections) or narrowed_grant(sections) else ids
    words = normalize(text)
    if len(words) <= _SHORT:
        named = names_in(" ".join(normalize(_FILE_NAME.sub(" ", text))))
        if named:
            return [*named, MODIFIED] if restricts_use(" ".join(words)) else named
        if len(words) <= _TRIVIAL or _POINTER.search(text):
            return []
    if notice and not restricts_use(" ".join(words)):
        return []
    return [UNKNOWN]

"""SPDX ids from what people write: expressions, loose names, PyPI classifiers."""

from __future__ import annotations

import re
from collections.abc import Collection
from functools import cache, lru_cache

from codefoundry.data.license.match import reference_ids

ALIASES = {  # loose names seen in metadata (lower-cased, punctuation collapsed) → SPDX id
    "mit": "MIT", "mit license": "MIT", "the mit license": "MIT", "expat": "MIT", "mit x11": "MIT",
    "apache": "Apache-2.0", "apache 2": "Apache-2.0", "apache 2 0": "Apache-2.0", "apache2": "Apache-2.0",
    "apache license 2 0": "Apache-2.0", "apache license version 2 0": "Apache-2.0", "asl 2 0": "Apache-2.0",
    "apache software license": "Apache-2.0", "apache license": "Apache-2.0",
    "apache software license 2 0": "Apache-2.0",
    "bsd": "BSD-3-Clause", "bsd license": "BSD-3-Clause", "new bsd": "BSD-3-Clause", "new bsd license": "BSD-3-Clause",
    "modified bsd": "BSD-3-Clause", "bsd 3 clause": "BSD-3-Clause", "3 clause bsd": "BSD-3-Clause",
    "bsd 3": "BSD-3-Clause", "revised bsd": "BSD-3-Clause", "simplified bsd": "BSD-2-Clause",
    "bsd 2 clause": "BSD-2-Clause", "2 clause bsd": "BSD-2-Clause", "freebsd": "BSD-2-Clause",
    "isc": "ISC", "isc license": "ISC", "iscl": "ISC", "psf": "PSF-2.0", "psfl": "PSF-2.0",
    "python software foundation license": "PSF-2.0", "psf license": "PSF-2.0", "python": "PSF-2.0",
    "mpl 2 0": "MPL-2.0", "mpl2": "MPL-2.0", "mozilla public license 2 0": "MPL-2.0",
    "gpl": "GPL-3.0", "gplv2": "GPL-2.0", "gplv3": "GPL-3.0", "gpl v2": "GPL-2.0", "gpl v3": "GPL-3.0",
    "gpl 2": "GPL-2.0", "gpl 3": "GPL-3.0", "gnu gpl": "GPL-3.0", "lgpl": "LGPL-3.0", "lgplv2": "LGPL-2.1",
    "lgplv3": "LGPL-3.0", "lgpl v3": "LGPL-3.0", "lgpl v2 1": "LGPL-2.1", "lgpl 2 1": "LGPL-2.1",
    "agpl": "AGPL-3.0", "agplv3": "AGPL-3.0", "unlicense": "Unlicense", "the unlicense": "Unlicense",
    "public domain": "Unlicense", "cc0": "CC0-1.0", "zlib": "Zlib", "zlib libpng": "Zlib", "epl 2 0": "EPL-2.0",
    "boost": "BSL-1.0", "hpnd": "HPND", "python 2 0": "Python-2.0", "0bsd": "0BSD",
    "gnu general public license": "GPL-3.0", "gnu lesser general public license": "LGPL-3.0",
    "gnu affero general public license": "AGPL-3.0", "gnu general public license v3": "GPL-3.0",
    "gnu general public license v2": "GPL-2.0", "gnu lesser general public license v3": "LGPL-3.0",
    "gnu general public license version 3": "GPL-3.0", "gnu general public license version 2": "GPL-2.0",
    "eclipse public license 2 0": "EPL-2.0",
    "bsd 3 clause license": "BSD-3-Clause", "bsd 2 clause license": "BSD-2-Clause", "3 clause bsd license":
    "BSD-3-Clause", "2 clause bsd license": "BSD-2-Clause", "boost software license": "BSL-1.0",
    "business source license": "BUSL-1.1", "server side public license": "SSPL-1.0", "elastic license": "Elastic-2.0",
    "json license": "JSON", "commons clause": "LicenseRef-Commons-Clause", "creative commons attribution 4 0":
    "CC-BY-4.0", "creative commons attribution noncommercial 4 0": "CC-BY-NC-4.0", "cc by nc 4 0": "CC-BY-NC-4.0",
}

CLASSIFIERS = {  # "License :: OSI Approved :: …" tail → SPDX id (None: too vague to name one)
    "MIT License": "MIT", "MIT No Attribution License (MIT-0)": "MIT-0", "Apache Software License": "Apache-2.0",
    "BSD License": "BSD-*", "ISC License (ISCL)": "ISC", "Python Software Foundation License": "PSF-2.0",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0", "GNU General Public License v2 (GPLv2)": "GPL-2.0",
    "GNU General Public License v2 or later (GPLv2+)": "GPL-2.0", "GNU General Public License v3 (GPLv3)": "GPL-3.0",
    "GNU General Public License v3 or later (GPLv3+)": "GPL-3.0",
    "GNU Lesser General Public License v2 (LGPLv2)": "LGPL-2.1",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.1",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0",
    "GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0",
    "GNU Library or Lesser General Public License (LGPL)": "LGPL-*", "GNU General Public License (GPL)": "GPL-*",
    "GNU Affero General Public License v3": "AGPL-3.0", "GNU Affero General Public License v3 or later (AGPLv3+)":
    "AGPL-3.0", "Eclipse Public License 2.0 (EPL-2.0)": "EPL-2.0", "The Unlicense (Unlicense)": "Unlicense",
    "zlib/libpng License": "Zlib", "Boost Software License 1.0 (BSL-1.0)": "BSL-1.0",
    "Universal Permissive License (UPL)": "UPL-1.0", "Historical Permission Notice and Disclaimer (HPND)": "HPND",
    "University of Illinois/NCSA Open Source License": "NCSA", "Zero-Clause BSD (0BSD)": "0BSD",
    "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication": "CC0-1.0",
}
_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_OPERATORS = {"AND", "OR", "WITH", "and", "or", "with"}
_SUFFIXES = ("-only", "-or-later", "+")


@cache
def known_ids() -> dict[str, str]:
    """Lower-cased id → id, for every license with a reference text (and Python-2.0's whole stack)."""
    return {spdx.lower(): spdx for spdx in reference_ids()} | {"python-2.0": "Python-2.0"}


@cache
def _known() -> frozenset[str]:
    """The ids of `known_ids`, for membership tests (a dict's values are searched one by one)."""
    return frozenset(known_ids().values())


@lru_cache(maxsize=4096)  # a repository's files and a pasted license text repeat few ids and words
def canonical(spdx_id: str) -> str:
    """Base SPDX id: "GPL-3.0-or-later" → "GPL-3.0", "LGPL-2.1+" → "LGPL-2.1"; known ids keep their case."""
    for suffix in _SUFFIXES:
        if spdx_id.endswith(suffix):
            spdx_id = spdx_id[: -len(suffix)]
    return known_ids().get(spdx_id.lower(), spdx_id)


def parse_expression(expression: str) -> list[str]:
    """What an SPDX expression asks of its licensee, as a list that must all be met (AND):
    "MIT AND BSD-3-Clause" → [MIT, BSD-3-Clause]; a choice stays one entry, its ids sorted:
    "MIT OR GPL-3.0" → ["GPL-3.0 OR MIT"] (`allows` evaluates it). Exceptions are dropped: a
    `WITH` exception only adds permissions, so its license decides. An id we do not know is kept
    as written unless it is a loose name we do ("Public-Domain"). A malformed expression gives
    every id it names (all must be met: the cautious reading)."""
    tokens = _TOKEN.findall(expression)
    try:
        tree, rest = _or(tokens, 0)
        if rest != len(tokens):
            raise ValueError("trailing tokens")
    except (ValueError, IndexError):
        ids, after_with = [], False
        for tok in tokens:
            if tok in "()":
                continue
            if tok in _OPERATORS:
                after_with = tok.upper() == "WITH"
                continue
            if not after_with:
                ids.append(_license_id(tok))
            after_with = False
        return ids
    return [_render(part) for part in tree[1]] if isinstance(tree, tuple) and tree[0] == "AND" else [_render(tree)]


def license_ids(entry: str) -> list[str]:
    """The ids one entry of `parse_expression` names ("GPL-3.0 OR MIT" → [GPL-3.0, MIT])."""
    return [t for t in _TOKEN.findall(entry) if t not in "()" and t not in _OPERATORS]


def allows(entry: str, allowed: Collection[str]) -> bool:
    """Is one license entry met by the allowed ids: an id on the list, any alternative of an OR, all parts of an AND."""
    if " " not in entry:
        return entry in allowed
    try:
        tree, _ = _or(_TOKEN.findall(entry), 0)
    except (ValueError, IndexError):  # not an expression we wrote: only an exact listing allows it
        return entry in allowed
    return _allows(tree, allowed)


_Tree = str | tuple[str, list]


def _allows(tree: _Tree, allowed: Collection[str]) -> bool:
    if isinstance(tree, str):
        return tree in allowed
    return (any if tree[0] == "OR" else all)(_allows(t, allowed) for t in tree[1])


@lru_cache(maxsize=4096)  # a pasted license text is parsed as an expression first: its words repeat
def _license_id(token: str) -> str:
    spdx_id = canonical(token)
    return spdx_id if spdx_id in _known() else ALIASES.get(_key(token), spdx_id)


def _or(tokens: list[str], i: int) -> tuple[_Tree, int]:
    """SPDX precedence, loosest first: OR, then AND, then WITH (which binds an exception to one license)."""
    return _chain(tokens, i, "OR", _and)


def _and(tokens: list[str], i: int) -> tuple[_Tree, int]:
    return _chain(tokens, i, "AND", _simple)


def _chain(tokens: list[str], i: int, op: str, inner) -> tuple[_Tree, int]:
    parts = []
    while True:
        part, i = inner(tokens, i)
        parts += part[1] if isinstance(part, tuple) and part[0] == op else [part]  # flatten (a OR (b OR c))
        if i < len(tokens) and tokens[i].upper() == op:
            i += 1
            continue
        unique = sorted(set(p for p in parts if isinstance(p, str))) + [p for p in parts if not isinstance(p, str)]
        return (unique[0] if len(unique) == 1 else (op, unique)), i


def _simple(tokens: list[str], i: int) -> tuple[_Tree, int]:
    tok = tokens[i]
    if tok == "(":
        tree, i = _or(tokens, i + 1)
        if tokens[i] != ")":
            raise ValueError("unbalanced parentheses")
        return tree, i + 1
    if tok in "()" or tok in _OPERATORS:
        raise ValueError(f"unexpected {tok!r}")
    i += 1
    if i < len(tokens) and tokens[i].upper() == "WITH":
        if tokens[i + 1] in "()" or tokens[i + 1] in _OPERATORS:
            raise ValueError("WITH needs an exception id")
        i += 2
    return _license_id(tok), i


def _render(tree: _Tree, top: bool = True) -> str:
    if isinstance(tree, str):
        return tree
    text = f" {tree[0]} ".join(_render(t, False) for t in tree[1])
    return text if top else f"({text})"


def _key(value: str) -> str:
    """A loose name as ALIASES spells it: lower-case words, without "the" before and "license" after."""
    words = re.findall(r"[a-z0-9]+", value.lower())
    if words[:1] == ["the"]:
        words = words[1:]
    while len(words) > 1 and words[-1] in ("license", "licence", "licensed"):
        words = words[:-1]
    return " ".join(words)


def from_name(value: str) -> list[str]:
    """SPDX ids for a metadata license value: an SPDX expression of known ids or a loose name; [] if unknown."""
    value = value.strip()
    key = " ".join(re.findall(r"[a-z0-9]+", value.lower()))
    for k in (key, _key(value)):
        if k in ALIASES:
            return [ALIASES[k]]
    ids = parse_expression(value)
    if ids and all(i in _known() for entry in ids for i in license_ids(entry)):
        return ids
    return []


def from_classifier(classifier: str) -> str | None:
    """SPDX id (or family wildcard like "BSD-*") for a "License :: OSI Approved :: …" classifier."""
    tail = classifier.split("::")[-1].strip()
    return CLASSIFIERS.get(tail)

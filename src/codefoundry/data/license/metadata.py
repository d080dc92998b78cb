"""What package metadata declares: pyproject.toml, setup.py, setup.cfg, package.json, Cargo.toml, PKG-INFO.

A declaration is evidence even when we cannot name it: an SPDX id we do not know (`BUSL-1.1`),
npm's `UNLICENSED` or `Proprietary` are kept as written (declared, not permissive), and free text
that names no license we know becomes `LicenseRef-unknown`. Only an absent or empty field
(or `UNKNOWN`, which old setuptools wrote for "not given") declares nothing.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from collections.abc import Iterable
from configparser import ConfigParser
from configparser import Error as ConfigParserError
from functools import lru_cache

from codefoundry.data.license.match import DEFAULT_THRESHOLD, identify
from codefoundry.data.license.spdx import ALIASES, from_classifier, from_name, parse_expression

UNKNOWN = "LicenseRef-unknown"
"""A license file or declaration that says something we cannot identify: evidence, never permissive."""
_FAMILY = {"BSD-*": "BSD-3-Clause", "GPL-*": "GPL-3.0", "LGPL-*": "LGPL-3.0"}  # unversioned classifiers
_NOT_GIVEN = {"", "UNKNOWN", "NONE", "N/A", "NA"}


def from_metadata(path: str, text: str, threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    """SPDX ids (or LicenseRef-unknown) a package metadata file declares; [] if it declares none or is unreadable."""
    name = path.rsplit("/", 1)[-1]
    try:
        if name == "pyproject.toml":
            return _pyproject(tomllib.loads(text), threshold)
        if name == "Cargo.toml":
            lic = tomllib.loads(text).get("package", {}).get("license")
            return declared(lic.replace("/", " OR "), threshold) if isinstance(lic, str) else []  # "/": old Cargo OR
        if name == "package.json":
            return _package_json(json.loads(text), threshold)
        if name == "setup.cfg":
            cfg = ConfigParser(interpolation=None)
            cfg.read_string(text)
            return _field_or_classifiers(cfg.get("metadata", "license", fallback=""),
                                         cfg.get("metadata", "classifiers", fallback="").splitlines(), threshold)
        if name == "setup.py":
            return _setup_py(text, threshold)
        if name in ("METADATA", "PKG-INFO"):
            return from_core_metadata(text, threshold)
    except (ValueError, tomllib.TOMLDecodeError, ConfigParserError, AttributeError, TypeError):
        return []
    return []


def from_core_metadata(text: str, threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    """Python core metadata: License-Expression, else License (free text), else license classifiers."""
    header = text.split("\n\n", 1)[0]
    fields: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in header.splitlines():
        if line.startswith((" ", "\t")) and last:  # a folded field: License may hold a whole license text
            last[-1] += "\n" + line.strip().removeprefix("|")
            continue
        key, sep, value = line.partition(":")
        if sep:
            last = fields.setdefault(key.strip().lower(), [])
            last.append(value.strip())
    if fields.get("license-expression"):
        return declared(fields["license-expression"][0], threshold)
    return _field_or_classifiers(fields.get("license", [""])[0], fields.get("classifier", []), threshold)


def declared(value: str, threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    """Ids a free-form license value declares: a known name, an SPDX expression (unknown ids kept as
    written), a pasted license text, or UNKNOWN when it says something we cannot name; [] when empty."""
    value = value.strip().lstrip("\ufeff")
    if value.upper() in _NOT_GIVEN:
        return []
    known = from_name(value)
    if known:
        return known
    if _looks_like_expression(value):
        return parse_expression(value)
    if len(value) > 200:
        found = identify(value, threshold)   # cached on disk: the same texts come back in every curation
        if found:
            return found
    return names_in(value) or [UNKNOWN]


@lru_cache(maxsize=256)
def names_in(text: str) -> list[str]:
    """Licenses a short statement names ("Released under the MIT License", "see COPYING (GPLv3)")."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    found: list[str] = []
    i = 0
    while i < len(words):
        for n in (5, 4, 3, 2, 1):  # the longest alias phrase starting here wins ("apache license 2 0" over "apache")
            key = " ".join(words[i: i + n])
            if len(words) >= i + n and key in ALIASES and (n > 1 or key not in _AMBIGUOUS_WORDS):
                if ALIASES[key] not in found:
                    found.append(ALIASES[key])
                i += n
                break
        else:
            i += 1
    return found


_AMBIGUOUS_WORDS = {"python", "boost", "zlib", "apache", "psf"}  # alone, these name software more often than licenses
_ID = re.compile(r"^(LicenseRef-[A-Za-z0-9.-]+|[A-Za-z][A-Za-z0-9.+-]*)$")
_OPERATOR = {"AND", "OR", "WITH"}


def _looks_like_expression(value: str) -> bool:
    """A single id-like token ("BUSL-1.1", "UNLICENSED", "Proprietary") or an SPDX expression whose operands all
    look like ids (a capital first letter and a version or dash: "BSD-3-Clause and Public-Domain"), not a sentence."""
    tokens = [t for t in re.findall(r"\(|\)|[^\s()]+", value) if t not in "()"]
    if len(tokens) == 1:
        return bool(_ID.match(tokens[0]))
    operands = [t for t in tokens if t.upper() not in _OPERATOR]
    return len(operands) < len(tokens) and all(
        _ID.match(t) and ((t[0].isupper() and ("-" in t or any(c.isdigit() for c in t))) or t.isupper())
        for t in operands)


def _field_or_classifiers(value: str, classifiers: Iterable[str], threshold: float) -> list[str]:
    """A free-text license field, unless it names nothing we know and classifiers do (they are structured)."""
    found = declared(value, threshold)
    from_classifiers = classifier_ids(classifiers)
    if found and (found != [UNKNOWN] or not from_classifiers):
        return found
    return from_classifiers


def classifier_ids(classifiers: Iterable[str]) -> list[str]:
    """Ids from "License :: …" trove classifiers; one we cannot name is UNKNOWN, "OSI Approved" alone nothing."""
    ids: list[str] = []
    for c in classifiers:
        parts = [p.strip() for p in c.split("::")]
        if parts[0] != "License" or len(parts) < 2 or parts[-1] in ("OSI Approved", "DFSG approved"):
            continue
        found = from_classifier(c)
        found = _FAMILY.get(found, found) if found else (from_name(parts[-1]) or names_in(parts[-1]) or [UNKNOWN])[0]
        if found not in ids:
            ids.append(found)
    return ids


def _pyproject(data: dict, threshold: float) -> list[str]:
    project = data.get("project", {})
    lic = project.get("license")
    if isinstance(lic, str):  # PEP 639: an SPDX expression
        return declared(lic, threshold)
    if isinstance(lic, dict) and isinstance(lic.get("text"), str):
        return _field_or_classifiers(lic["text"], project.get("classifiers", []), threshold)
    poetry = data.get("tool", {}).get("poetry", {})
    if isinstance(poetry.get("license"), str):
        return declared(poetry["license"], threshold)
    return classifier_ids(project.get("classifiers", []) or poetry.get("classifiers", []))


def _package_json(data: dict, threshold: float) -> list[str]:
    lic = data.get("license")
    if isinstance(lic, dict):  # the old {"type": "MIT", "url": …} form
        lic = lic.get("type")
    if isinstance(lic, str):
        if lic.upper().startswith("SEE LICENSE IN"):
            return []  # the named file is read as a license file where its name says so
        return declared(lic, threshold)
    old = data.get("licenses")  # the old [{"type": …}] form
    if isinstance(old, list):
        return [i for entry in old if isinstance(entry, dict) and isinstance(entry.get("type"), str)
                for i in declared(entry["type"], threshold)]
    return []


def _setup_py(text: str, threshold: float) -> list[str]:
    """`license=` and `classifiers=` of the setup() call, when they are literals (the file is never run)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    license_value, classifiers = "", []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "setup"):
            continue
        for kw in node.keywords:
            try:
                value = ast.literal_eval(kw.value)
            except ValueError:
                continue
            if kw.arg == "license" and isinstance(value, str):
                license_value = value
            elif kw.arg == "classifiers" and isinstance(value, list | tuple):
                classifiers = [c for c in value if isinstance(c, str)]
    return _field_or_classifiers(license_value, classifiers, threshold)

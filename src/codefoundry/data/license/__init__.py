"""Repository-level license detection and The Stack v2's `license_type`.

Evidence, strongest first (a repository gets the union of the first kind that names any):
1. license files at the repository root (LICENSE*, COPYING*, NOTICE*, *-LICENSE, LICENSES/*),
   identified by matching their text against the reference texts in `texts/` (`match.py`),
   together with package metadata (pyproject.toml, setup.cfg, package.json, Cargo.toml,
   METADATA / PKG-INFO: License-Expression, License, classifiers);
2. `SPDX-License-Identifier:` lines in the files' headers.
`license_type` follows The Stack v2 (`the-stack-v2: 3_file_dataset/get_license_types.py`):
permissive if at least one license is on the permissive list and none is off it,
no_license if nothing was detected, else non_permissive.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from configparser import ConfigParser
from configparser import Error as ConfigParserError
from dataclasses import dataclass, field

from codefoundry.data.license.match import DEFAULT_THRESHOLD, identify
from codefoundry.data.license.spdx import canonical, from_classifier, from_name, parse_expression

PERMISSIVE = (  # default permissive list (Blue Oak Council's permissive ratings, plus public-domain dedications)
    "0BSD", "AFL-3.0", "Apache-2.0", "Artistic-2.0", "BlueOak-1.0.0", "BSD-2-Clause", "BSD-2-Clause-Patent",
    "BSD-3-Clause", "BSD-3-Clause-Clear", "BSD-4-Clause", "BSL-1.0", "CC-BY-4.0", "CC0-1.0", "ECL-2.0", "HPND",
    "ISC", "MIT", "MIT-0", "MIT-CMU", "MS-PL", "MulanPSL-2.0", "NCSA", "PostgreSQL", "PSF-2.0", "Python-2.0", "UPL-1.0",
    "Unlicense", "WTFPL", "Zlib",
)
PERMISSIVE_TYPES = ("permissive", "no_license", "non_permissive")
_LICENSE_NAME = re.compile(r"^(|.*[-_. ])(li[cs]en[cs]e[sd]?|copying|notice|unlicense|copyright)([-_. ].*|)$",
                           re.IGNORECASE)
_CODE_EXTENSIONS = frozenset({"py", "js", "ts", "go", "rs", "c", "h", "cc", "cpp", "java", "rb", "php", "sh", "json",
                              "yaml", "yml", "toml", "cfg", "ini", "xml", "pl", "swift", "kt", "cs", "scala", "lua",
                              "r", "jl", "ipynb"})
METADATA_FILES = ("pyproject.toml", "setup.cfg", "package.json", "Cargo.toml", "METADATA", "PKG-INFO")
_SPDX_HEADER = re.compile(r"SPDX-License-Identifier:\s*([^\n*]+?)\s*(?:\*/|-->|$)", re.MULTILINE)


def is_license_file(path: str) -> bool:
    """A root-level license file (LICENSE, COPYING.txt, MIT-LICENSE, NOTICE, LICENSES/MIT.txt …)."""
    parts = path.split("/")
    if len(parts) == 2 and parts[0] in ("LICENSES", "licenses", "LICENSE", "license"):
        return True
    name = parts[0]
    if len(parts) != 1 or name.rsplit(".", 1)[-1].lower() in _CODE_EXTENSIONS:
        return False
    return bool(_LICENSE_NAME.match(name.rsplit(".", 1)[0] if "." in name[1:] else name))


def is_metadata_file(path: str) -> bool:
    return "/" not in path and path in METADATA_FILES


def from_license_text(text: str, threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    return identify(text, threshold)


def from_metadata(name: str, text: str) -> list[str]:
    """SPDX ids a package metadata file declares ([] if none or unreadable)."""
    try:
        if name == "pyproject.toml":
            project = tomllib.loads(text).get("project", {})
            lic = project.get("license")
            if isinstance(lic, str):
                return from_name(lic)
            if isinstance(lic, dict) and isinstance(lic.get("text"), str):
                return _value(lic["text"])
            return _classifiers(project.get("classifiers", []))
        if name == "Cargo.toml":
            lic = tomllib.loads(text).get("package", {}).get("license")
            return parse_expression(lic.replace("/", " OR ")) if isinstance(lic, str) else []  # "/": old Cargo OR
        if name == "package.json":
            lic = json.loads(text).get("license")
            return from_name(lic) if isinstance(lic, str) else []
        if name == "setup.cfg":
            cfg = ConfigParser(interpolation=None)
            cfg.read_string(text)
            found = _value(cfg.get("metadata", "license", fallback=""))
            return found or _classifiers(cfg.get("metadata", "classifiers", fallback="").splitlines())
        if name in ("METADATA", "PKG-INFO"):
            return from_core_metadata(text)
    except (ValueError, tomllib.TOMLDecodeError, ConfigParserError, AttributeError):
        return []
    return []


def from_core_metadata(text: str) -> list[str]:
    """Python core metadata: License-Expression, else License, else license classifiers."""
    header = text.split("\n\n", 1)[0]
    fields: dict[str, list[str]] = {}
    for line in header.splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith((" ", "\t")):
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("license-expression"):
        return parse_expression(fields["license-expression"][0])
    found = _value(fields.get("license", [""])[0])
    return found or _classifiers(fields.get("classifier", []))


def _value(value: str) -> list[str]:
    """A free-form license value: a name/expression, or a pasted license text."""
    value = value.strip()
    if not value or value.upper() in ("UNKNOWN", "NONE"):
        return []
    return from_name(value) or (identify(value) if len(value) > 200 else [])


def _classifiers(classifiers: Iterable[str]) -> list[str]:
    ids = [from_classifier(c) for c in classifiers if c.strip().startswith("License ::")]
    return [i for i in ids if i and not i.endswith("*")]


def spdx_headers(text: str) -> list[str]:
    """Ids in `SPDX-License-Identifier:` lines among a file's first lines."""
    head = text[:3000]
    return [i for m in _SPDX_HEADER.finditer(head) for i in parse_expression(m.group(1))]


def license_type(licenses: Iterable[str], permissive: Iterable[str] = PERMISSIVE) -> str:
    """permissive | no_license | non_permissive, as The Stack v2 decides."""
    ids = set(licenses)
    if not ids:
        return "no_license"
    return "permissive" if ids <= set(permissive) else "non_permissive"


@dataclass
class LicenseEvidence:
    """What a repository says about its license, gathered while its files are read."""

    files: dict[str, list[str]] = field(default_factory=dict)     # license file path → ids matched
    metadata: dict[str, list[str]] = field(default_factory=dict)  # metadata file → ids declared
    headers: Counter[str] = field(default_factory=Counter)        # SPDX header id → files

    def add_file(self, path: str, text: str, threshold: float = DEFAULT_THRESHOLD) -> None:
        """Look at one file of the repository (cheap for files that are neither license nor metadata)."""
        if is_license_file(path):
            self.files[path] = from_license_text(text, threshold)
        elif is_metadata_file(path):
            self.metadata[path] = from_metadata(path, text)
        if "SPDX-License-Identifier" in text[:3000]:
            self.headers.update(set(spdx_headers(text)))

    def licenses(self) -> list[str]:
        """The repository's SPDX ids (sorted), by the evidence order in the module docstring."""
        declared = {canonical(i) for ids in (*self.files.values(), *self.metadata.values()) for i in ids}
        if not declared:
            declared = {canonical(i) for i in self.headers}
        if "LGPL-3.0" in declared:
            declared.discard("GPL-3.0")  # LGPL-3.0 is GPL-3.0 plus permissions; projects ship both texts
        return sorted(declared)


def detect(files: Mapping[str, str], threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    """SPDX ids of a repository given its files (path → text)."""
    evidence = LicenseEvidence()
    for path, text in files.items():
        evidence.add_file(path, text, threshold)
    return evidence.licenses()


__all__ = ["PERMISSIVE", "LicenseEvidence", "detect", "from_core_metadata", "from_license_text", "from_metadata",
           "identify", "is_license_file", "license_type", "spdx_headers"]

"""A repository's license evidence, and the licenses that apply to each of its files.

Evidence has a scope: a license file or package metadata speaks for its directory and below
(The Stack v2 looks for license files in a file's directory and its parents), an
`SPDX-License-Identifier:` header for its own file. A file gets every id that applies to it,
so the most restrictive license decides its type: an MIT root does not make a GPL-3.0
`contrib/foo/` permissive, and a GPL header makes its one file non-permissive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from codefoundry.data.license.match import DEFAULT_THRESHOLD
from codefoundry.data.license.metadata import from_metadata
from codefoundry.data.license.names import is_license_file, is_metadata_file, scope_of
from codefoundry.data.license.spdx import canonical, parse_expression
from codefoundry.data.license.verdict import license_file_ids

_SPDX_HEADER = re.compile(r"SPDX-License-Identifier:\s*([^\n*]+?)\s*(?:\*/|-->|$)", re.MULTILINE)
HEADER_CHARS = 3000  # SPDX headers are looked for among a file's first characters


def spdx_headers(text: str) -> list[str]:
    """Ids in `SPDX-License-Identifier:` lines among a file's first lines."""
    head = text[:HEADER_CHARS]
    if "SPDX-License-Identifier" not in head:
        return []
    return [i for m in _SPDX_HEADER.finditer(head) for i in parse_expression(m.group(1))]


def combine(ids: Iterable[str]) -> list[str]:
    """Sorted base ids; LGPL-3.0 is GPL-3.0 plus permissions and projects ship both texts: LGPL-3.0 alone stands."""
    found = {canonical(i) for i in ids}
    if "LGPL-3.0" in found:
        found.discard("GPL-3.0")
    return sorted(found)


@dataclass
class LicenseEvidence:
    """What a repository says about its licenses, gathered while its files are read.

    `files` and `metadata` are keyed by path and apply to `scope_of(path)`; `declared` holds what
    a source knows for a directory without a file in the repository (a distribution's METADATA)."""

    files: dict[str, list[str]] = field(default_factory=dict)      # license file → ids it gives
    metadata: dict[str, list[str]] = field(default_factory=dict)   # metadata file → ids it declares
    declared: dict[str, list[str]] = field(default_factory=dict)   # directory → ids declared for it
    _scoped: dict[str, list[str]] | None = field(default=None, repr=False)
    _by_folder: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    def add_file(self, path: str, text: str, threshold: float = DEFAULT_THRESHOLD) -> None:
        """Look at one license or metadata file of the repository (other files are ignored)."""
        if is_license_file(path):
            self.files[path] = license_file_ids(path, text, threshold)
        elif is_metadata_file(path):
            self.metadata[path] = from_metadata(path, text, threshold)
        else:
            return
        self._scoped = None

    def declare(self, directory: str, ids: Iterable[str]) -> None:
        self.declared.setdefault(directory, []).extend(ids)
        self._scoped = None

    def scopes(self) -> dict[str, list[str]]:
        """Directory → ids of the evidence that sits there."""
        if self._scoped is None:
            self._by_folder.clear()
            scoped: dict[str, list[str]] = {d: list(ids) for d, ids in self.declared.items()}
            for path, ids in (*self.files.items(), *self.metadata.items()):
                scoped.setdefault(scope_of(path), []).extend(ids)
            self._scoped = scoped
        return self._scoped

    def licenses_for(self, path: str, header_ids: Iterable[str] = ()) -> list[str]:
        """Ids that apply to the file at `path`: its directory's and every parent's, plus its own header's."""
        scopes = self.scopes()
        ids = list(header_ids)
        headerless, folder = not ids, path.rpartition("/")[0]
        if headerless and folder in self._by_folder:  # a folder's files share their licenses: combined once
            return list(self._by_folder[folder])
        parts = path.split("/")[:-1]
        for depth in range(len(parts) + 1):
            ids += scopes.get("/".join(parts[:depth]), [])
        found = combine(ids)
        if headerless:
            self._by_folder[folder] = found
            return list(found)
        return found

    def licenses(self) -> list[str]:
        """Every id found anywhere in the repository (sorted)."""
        return combine(i for ids in self.scopes().values() for i in ids)


def detect(files: dict[str, str], threshold: float = DEFAULT_THRESHOLD) -> dict[str, list[str]]:
    """Ids that apply to each file of a repository given as {path: text}."""
    evidence = LicenseEvidence()
    for path, text in files.items():
        evidence.add_file(path, text, threshold)
    return {path: evidence.licenses_for(path, spdx_headers(text)) for path, text in files.items()}

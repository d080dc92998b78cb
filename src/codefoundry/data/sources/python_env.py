"""The embedded default corpus: installed Python distributions and the standard library.

`site-packages`: every distribution installed in this interpreter's environment is one
repository (`pypi/<name>`): its files from the RECORD manifest, its license from its core
metadata (License-Expression, License, classifiers) and its license files (`.dist-info/
licenses/`, `License-File:` entries, LICENSE* in the .dist-info). The metadata files
themselves are evidence, not rows. `stdlib`: the standard library as `python/cpython`,
licensed by its LICENSE.txt.
"""

from __future__ import annotations

import csv
import email.parser
import email.policy
import itertools
import re
import sysconfig
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc

from codefoundry.data.license import (
    LicenseEvidence,
    decode_lenient,
    from_core_metadata,
    is_license_file,
    license_file_ids,
)
from codefoundry.data.sources.local import SKIP_DIRS, disk_entries, walk
from codefoundry.data.sources.repo import RepoInfo, repo_batches
from codefoundry.data.sources.unit import ReadOptions

EMBEDDED = ("site-packages", "stdlib")


def site_packages_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    return sorted({Path(paths["purelib"]).resolve(), Path(paths["platlib"]).resolve()})


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def record_paths(dist: metadata.Distribution) -> list[str]:
    """`[f.as_posix() for f in dist.files or []]`, read from RECORD (or SOURCES.txt) without a `PackagePath`
    per file: pathlib's parsing was most of the cost of listing a distribution."""
    text = dist.read_text("RECORD")
    lines: list[str] | None = text.splitlines() if text else None
    if lines and '"' not in text and "\0" not in text:  # nothing quoted: csv's row is the line cut at its commas
        if "" in lines or any(n > 2 for n in map(str.count, lines, itertools.repeat(","))):
            return [f.as_posix() for f in dist.files or []]  # what importlib makes of a malformed RECORD
        return _posix_all([line.partition(",")[0] for line in lines])
    if not lines:
        sources = dist.read_text("SOURCES.txt")
        lines = [f'"{line}"' for line in sources.splitlines()] if sources else None  # as importlib does
    if lines is None:
        return []
    rows = list(csv.reader(lines))
    if any(not 1 <= len(row) <= 3 for row in rows):  # what importlib makes of a malformed RECORD
        return [f.as_posix() for f in dist.files or []]
    return [_posix(row[0]) for row in rows]


def _posix_all(names: list[str]) -> list[str]:
    """`[_posix(n) for n in names]`, looking at each name only when the joined names hold something it changes."""
    joined = "\n" + "\n".join(names) + "\n"  # names come from `splitlines`: none holds a line break
    if any(mark in joined for mark in ("\n\n", "//", "\n./", "/./", "/\n", "/.\n", "\n.\n")):
        return [_posix(name) for name in names]
    return names


def _posix(name: str) -> str:
    """`PurePosixPath(name).as_posix()`, without pathlib for the names it would not change."""
    if not name or "//" in name or name.startswith("./") or "/./" in name or name.endswith(("/", "/.")) \
            or name == ".":
        return PurePosixPath(name).as_posix()
    return name


def distribution_license_files(dist: metadata.Distribution, files: list[str] | None = None) -> dict[str, str]:
    """Path (in the .dist-info) → text of the license files a distribution ships (`files`: its RECORD's
    paths, if read)."""
    out = {}
    for rel in record_paths(dist) if files is None else files:
        if ".dist-info/" not in rel:  # what every path of a .dist-info (and a name in it) holds
            continue
        parts = rel.split("/")
        if not parts[0].endswith(".dist-info"):
            continue
        inner = "/".join(parts[1:])
        if inner.startswith("licenses/") or is_license_file(inner) or (len(parts) == 2 and "LICEN" in inner.upper()):
            try:
                out[rel] = decode_lenient(Path(dist.locate_file(rel)).read_bytes())
            except OSError:
                continue
    return out


def license_files_evidence(dist: metadata.Distribution, threshold: float,
                           files: list[str] | None = None) -> dict[str, list[str]]:
    """What each of a distribution's license files is, by text matching only."""
    return {path: license_file_ids(path, text, threshold)
            for path, text in distribution_license_files(dist, files).items()}


_LEFT_OUT = re.compile(r"^[^/]*\.dist-info(/|$)|^\.\.|(^|/)(" + "|".join(map(re.escape, sorted(SKIP_DIRS))) + r")(/|$)")


def listed_files(files: list[str]) -> list[str]:
    """A distribution's RECORD paths that are rows, in order, each once: not its .dist-info, nothing outside
    site-packages (`../`), nothing under a skipped folder (one regex over all paths: Arrow's, when they convert)."""
    try:
        names = pa.array(files, pa.string())
    except (pa.ArrowException, UnicodeEncodeError):
        kept = [rel for rel in files if not _LEFT_OUT.search(rel)]
    else:
        left_out = pc.match_substring_regex(names, _LEFT_OUT.pattern).to_numpy(zero_copy_only=False)
        kept = list(itertools.compress(files, ~left_out)) if len(files) else []
    return list(dict.fromkeys(kept))


def _metadata_name(dist: metadata.Distribution, core: str | None) -> str | None:
    """`dist.metadata["Name"]` from its headers alone (importlib parses the whole METADATA, description and all)."""
    text = core or dist.read_text("PKG-INFO") or dist.read_text("") or ""
    name = header_value(text, "name")
    if name is _UNSURE:
        name = email.parser.Parser(policy=email.policy.compat32).parsestr(text, headersonly=True)["Name"]
    if not name or "\n" not in name:
        return name
    return textwrap.dedent(" " * 8 + name)  # importlib's repair of a folded value (RFC 822 indentation)


_UNSURE = object()
_HEADER_LINE = re.compile(r"[!-9;-~]+:|[ \t]")  # a field or its continuation, as the email parser reads them


def header_value(text: str, field: str) -> str | object | None:
    """The email parser's (compat32, headers only) value of the first header named `field` (lower case), read
    line by line up to it: None when there is none, `_UNSURE` when a line before it is one the parser would
    read otherwise (CR line ends, an envelope `From ` line, a line that is no header: the caller asks it)."""
    head = text.partition("\n\n")[0]  # an empty line ends the headers
    value: list[str] | None = None
    for line in head.split("\n"):
        if value is not None:
            if line[:1] not in (" ", "\t"):
                break
            value.append(line)
        elif "\r" in line or line.startswith("From ") or not _HEADER_LINE.match(line):
            return _UNSURE
        elif line[0] not in " \t" and line.partition(":")[0].lower() == field:
            value = [line.partition(":")[2].lstrip(" \t")]
        else:
            continue
        if "\r" in line:
            return _UNSURE
    return None if value is None else "\n".join(value).rstrip("\r\n")


@dataclass(frozen=True)
class DistributionRepo:
    """One installed distribution, found by its .dist-info folder."""

    dist_info: Path
    options: ReadOptions

    def describe(self) -> str:
        return f"dist {self.dist_info}"

    def read(self) -> Iterator[pa.Table]:
        dist = metadata.Distribution.at(self.dist_info)
        core = dist.read_text("METADATA")
        name = (_metadata_name(dist, core) or self.dist_info.name.split("-")[0]).lower().replace("_", "-")
        site = self.dist_info.parent
        evidence = LicenseEvidence()  # the .dist-info's license files and METADATA speak for the whole distribution
        files = record_paths(dist)  # parsing RECORD is costly: once
        for ids in license_files_evidence(dist, self.options.license_threshold, files).values():
            evidence.declare("", ids)
        evidence.declare("", from_core_metadata(core or "", self.options.license_threshold))
        yield from repo_batches(RepoInfo(f"pypi/{name}"), disk_entries(listed_files(files), site, self.options),
                                evidence=evidence, **self.options.kwargs())


@dataclass(frozen=True)
class StdlibRepo:
    """The standard library (without site-packages) as one repository."""

    root: Path
    options: ReadOptions

    def describe(self) -> str:
        return f"stdlib {self.root}"

    def read(self) -> Iterator[pa.Table]:
        # site-packages is not walked (another source, and most of the files under the stdlib's folder)
        listing = [rel for rel, _ in walk(self.root, frozenset({"site-packages"}))
                   if not rel.startswith("site-packages/")]
        yield from repo_batches(RepoInfo("python/cpython"), disk_entries(listing, self.root, self.options),
                                **self.options.kwargs())


def distributions(site_dirs: list[Path] | None = None) -> list[Path]:
    """Every .dist-info folder in the environment's site-packages, sorted by name."""
    found = set()
    for site in site_dirs or site_packages_dirs():
        found.update(p for p in site.glob("*.dist-info") if (p / "METADATA").is_file())
    return sorted(found, key=lambda p: p.name.lower())

"""Which files carry license evidence, which directory they speak for, and how to read their bytes.

License files are named as licensee names them (LICENSE, LICENCE.md, COPYING.LESSER, UNLICENSE,
COPYRIGHT, LICENSE-MIT, MIT-LICENSE.txt), as REUSE names them (LICENSES/MIT.txt), or after the
license itself (gpl-3.0.txt, Apache-2.0.md, BSD.txt); NOTICE files are read too (Apache projects
put license text there) but never count against a repository when they hold none. Any of them may
sit in any directory: a license file speaks for its directory and everything below it (one in
LICENSES/ or licenses/ for the folder above, one in a vendored `*.dist-info/` for the folder that
holds it), package metadata for its own directory and below.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_LICENSE_WORD = r"(un)?licen[cs]e[sd]?|copying|copyright"
_LICENSE_NAME = re.compile(rf"^({_LICENSE_WORD}|notice)([-_. ].*)?$|^.*[-_.]({_LICENSE_WORD})([-_. ].*)?$",
                           re.IGNORECASE)
_NAMED_AFTER_LICENSE = re.compile(  # gpl-3.0.txt, LGPL-2.1, mit.txt, Apache-2.0.md, BSD-3-Clause.txt, mpl-2.0
    r"^(a|l)?gpl([-_ .v]*[0-9.]+(-only|-or-later|\+)?)?|mit|isc|bsd([-_][0-9]+[-_]clause)?|apache([-_ ]?[0-9.]+)?"
    r"|mpl([-_][0-9.]+)?|epl([-_][0-9.]+)?|unlicense|wtfpl|zlib|cc0([-_]1\.0)?|0bsd|bsl([-_]1\.0)?|psf([-_]2\.0)?$",
    re.IGNORECASE)
_TEXT_SUFFIXES = ("", ".txt", ".md", ".markdown", ".rst", ".html", ".htm", ".text", ".adoc", ".org")
_CODE_EXTENSIONS = frozenset({"py", "js", "ts", "go", "rs", "c", "h", "cc", "cpp", "java", "rb", "php", "sh", "json",
                              "yaml", "yml", "toml", "cfg", "ini", "xml", "pl", "swift", "kt", "cs", "scala", "lua",
                              "r", "jl", "ipynb", "spdx", "header", "gemspec", "pyc", "css", "svg", "png"})
LICENSE_DIRS = frozenset({"LICENSES", "licenses", "LICENSE", "license", "LICENCES", "licences"})
METADATA_FILES = frozenset({"pyproject.toml", "setup.cfg", "setup.py", "package.json", "Cargo.toml", "METADATA",
                            "PKG-INFO"})


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def is_license_file(path: str) -> bool:
    """A file whose name says it holds a license, in any directory (see the module docstring)."""
    parts = path.split("/")
    name = parts[-1]
    suffix = _suffix(name)
    if suffix[1:] in _CODE_EXTENSIONS:
        return False
    if len(parts) >= 2 and parts[-2] in LICENSE_DIRS:
        return True
    if _LICENSE_NAME.match(name):
        return True
    stem = name[: -len(suffix)] if suffix in _TEXT_SUFFIXES and suffix else name
    if suffix not in _TEXT_SUFFIXES and not re.fullmatch(r"\.[0-9]+(\.[0-9]+)*", suffix):  # gpl-3.0 has ".0"
        return False
    return bool(_NAMED_AFTER_LICENSE.fullmatch(stem))


_ATTRIBUTION = ("NOTICE", "AUTHORS", "CONTRIBUTORS", "CREDITS", "THANKS", "ACKNOWLEDGEMENTS", "ACKNOWLEDGMENTS",
                "PATENTS", "README")


def is_notice_file(path: str) -> bool:
    """NOTICE / AUTHORS-like attribution files: evidence when they hold a license, never when they don't."""
    return path.rsplit("/", 1)[-1].upper().startswith(_ATTRIBUTION)


def is_metadata_file(path: str) -> bool:
    """Package metadata (pyproject.toml, setup.py, setup.cfg, package.json, Cargo.toml, PKG-INFO) in any directory."""
    return path.rsplit("/", 1)[-1] in METADATA_FILES


# Every ASCII name `is_license_file` or `is_metadata_file` accepts holds one of these (case aside): its license
# word, a license's name, or a metadata file's name.
_MAYBE_EVIDENCE = ("licen|copying|copyright|notice|gpl|mit|isc|bsd|apache|mpl|epl|wtfpl|zlib|cc0|bsl|psf"
                   r"|pyproject\.toml|setup\.cfg|setup\.py|package\.json|cargo\.toml|metadata|pkg-info")
_BULK_MIN = 64  # fewer paths: one Python test each costs less than Arrow's setup


def evidence_files(paths: Sequence[str]) -> list[bool]:
    """`is_license_file(p) or is_metadata_file(p)` for each path. One regex over all paths (Arrow's, no Python call
    per path) leaves the exact tests to the few that can pass: ASCII paths with a license or metadata word, and
    every non-ASCII path (case folding beyond ASCII is Python's to judge)."""
    exact = [is_license_file(p) or is_metadata_file(p) for p in paths] if len(paths) < _BULK_MIN else None
    if exact is not None:
        return exact
    try:
        names = pa.array(paths, pa.string())
    except (pa.ArrowException, UnicodeEncodeError):  # a name with undecodable bytes (surrogate escapes)
        return [is_license_file(p) or is_metadata_file(p) for p in paths]
    maybe = pc.or_(pc.invert(pc.string_is_ascii(names)),
                   pc.match_substring_regex(names, _MAYBE_EVIDENCE, ignore_case=True))
    out = [False] * len(paths)
    for i in np.flatnonzero(maybe.to_numpy(zero_copy_only=False)).tolist():
        out[i] = is_license_file(paths[i]) or is_metadata_file(paths[i])
    return out


def scope_of(path: str) -> str:
    """The directory ("" for the root) a license or metadata file speaks for."""
    parts = path.split("/")[:-1]
    if parts and parts[-1] in LICENSE_DIRS and is_license_file(path):
        parts = parts[:-1]
    if parts and parts[-1].endswith((".dist-info", ".egg-info")):  # a vendored package's metadata folder
        parts = parts[:-1]
    return "/".join(parts)


def decode_lenient(data: bytes) -> str:
    """Text of a license or metadata file whatever its encoding: a BOM (UTF-8/16/32) decides, then UTF-16
    without BOM (every other byte NUL), then UTF-8, then Latin-1 (which decodes any bytes)."""
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
                          (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                          (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(encoding, "replace")
    head = data[:2000]
    if len(head) >= 4 and head.count(0) * 3 >= len(head):  # UTF-16 text without a BOM: NULs at odd or even bytes
        return data.decode("utf-16-le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16-be", "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")

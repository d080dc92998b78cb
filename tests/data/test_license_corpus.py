"""The license promise on hostile real-world layouts: a corpus of small repositories, each with the
verdict its files must get, curated by the real `codefoundry data curate` under both license policies.

Every repository holds real code (a distinct stdlib module per probe file, so dedup never interferes)
beside the license evidence under test: restricted variants of permissive licenses, unidentifiable
license files beside permissive metadata, licenses below the root, SPDX headers, odd encodings and
names, metadata in every format, and files that must never be read (symlinks out, undecodable names).
A verdict is the `reason` a file gets (None: kept) under `permissive` and `permissive+no_license`.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from codefoundry.cli import run
from conftest import MIT_LICENSE, STDLIB, make_git_repo
from fixtures_data import license_text

PROBES = ("__future__.py", "_aix_support.py", "_bootsubprocess.py", "_compat_pickle.py", "_compression.py",
          "_py_abc.py", "_sitebuiltins.py", "_threading_local.py", "_weakrefset.py", "abc.py", "asynchat.py",
          "bisect.py", "bz2.py", "cProfile.py", "chunk.py", "code.py", "codeop.py", "colorsys.py", "copy.py",
          "copyreg.py", "crypt.py", "filecmp.py", "fnmatch.py", "genericpath.py", "getopt.py", "getpass.py", "glob.py",
          "graphlib.py", "hashlib.py", "hmac.py", "imghdr.py", "imp.py", "io.py", "linecache.py", "mailcap.py",
          "netrc.py", "nturl2path.py", "numbers.py", "opcode.py", "operator.py", "pipes.py", "pty.py", "py_compile.py",
          "pyclbr.py", "queue.py", "quopri.py", "reprlib.py", "rlcompleter.py", "sched.py", "secrets.py", "shelve.py",
          "signal.py", "sndhdr.py", "stat.py", "string.py", "symtable.py", "tabnanny.py", "types.py", "uu.py",
          "xdrlib.py", "zipapp.py")
"""Stdlib modules that pass every quality filter (checked once: all kept from an MIT repository)."""

CODE = object()  # in a case's files: "put a distinct real Python module here"
NC_MIT = MIT_LICENSE.replace("and/or sell\ncopies of the Software", "copies of the Software for\nnon-commercial "
                             "purposes only")
JSON_MIT = MIT_LICENSE.replace("portions of the Software.\n",
                               "portions of the Software.\n\nThe Software shall be used for Good, not Evil.\n")
NO_MILITARY = license_text("BSD-3-Clause") + ("\n4. The Software may not be used for military purposes or in the "
                                              "design, construction or operation of weapons.\n")
COMMONS = license_text("restricted/LicenseRef-Commons-Clause").replace("[name of software]", "Widget").replace(
    "[name of license]", "Apache 2.0").replace("[name of licensor]", "Acme") + "\n" + license_text("Apache-2.0")
PROPRIETARY = ("Copyright (c) 2023 Acme Corporation. All rights reserved.\n\nThis software and its documentation are "
               "proprietary to Acme Corporation. No part of it may be copied, modified or distributed without the "
               "prior written permission of Acme Corporation.\n")
CUSTOM = ("Beerware-ish terms\n\nYou can do what you like with this code as long as you buy the author a coffee the "
          "next time you meet, and you tell nobody where it came from. The author keeps the right to change these "
          "terms at any time for any future version.\n")
TITLED_MIT = "The MIT License (MIT)\n\nThis project is released under the following terms.\n\n" + MIT_LICENSE
GPL = license_text("GPL-3.0")
SETUP_CLASSIFIERS = """import setuptools

setuptools.setup(
    name="w",
    classifiers=[
        "License :: OSI Approved :: GNU General Public License v2 (GPLv2)",
    ],
)
"""


@dataclass(frozen=True)
class Case:
    """A repository: its files, how it is given (git | dir | tar), and the verdicts its files must get.

    `expect` maps a path to (reason under permissive, reason under permissive+no_license); None is kept."""

    name: str
    files: dict[str, str | bytes | object]
    expect: dict[str, tuple[str | None, str | None]]
    kind: str = "git"
    links: dict[str, str] = field(default_factory=dict)  # path → symlink target (dir cases)
    folder: bytes = b""  # the repository's folder name when it is not `name` (bytes that are not UTF-8)

    @property
    def repo(self) -> str:
        """The repo_name the dataset gives it (undecodable bytes escaped)."""
        return self.folder.decode("utf-8", "backslashreplace") if self.folder else self.name


KEPT = (None, None)
NO_LICENSE = ("license:no_license", None)


def both(reason: str) -> tuple[str, str]:
    return reason, reason


CASES = [
    # permissive licenses and plain verdicts
    Case("mit", {"LICENSE": MIT_LICENSE, "a.py": CODE}, {"a.py": KEPT}),
    Case("apache", {"LICENSE": license_text("Apache-2.0"), "src/a.py": CODE}, {"src/a.py": KEPT}),
    Case("bsd3", {"LICENSE.txt": license_text("BSD-3-Clause"), "a.py": CODE}, {"a.py": KEPT}),
    Case("gpl3", {"COPYING": GPL, "a.py": CODE}, {"a.py": both("license:gpl-3.0")}),
    Case("unlicensed-code", {"a.py": CODE}, {"a.py": NO_LICENSE}),
    Case("mit-with-title", {"LICENSE.md": TITLED_MIT, "a.py": CODE}, {"a.py": KEPT}),
    Case("apache-notice", {"LICENSE": license_text("Apache-2.0"), "NOTICE": "Widget\nCopyright 2020 Acme Inc.\n\n"
                           "This product includes software developed at Acme Inc.\n", "a.py": CODE}, {"a.py": KEPT}),
    # restricted variants of permissive licenses
    Case("json-license", {"LICENSE": JSON_MIT, "a.py": CODE}, {"a.py": both("license:json")}),
    Case("mit-non-commercial", {"LICENSE": NC_MIT, "a.py": CODE}, {"a.py": both("license:modified")}),
    Case("bsd3-no-military", {"LICENSE": NO_MILITARY, "a.py": CODE}, {"a.py": both("license:modified")}),
    Case("apache-commons-clause", {"LICENSE": COMMONS, "a.py": CODE}, {"a.py": both("license:commons-clause")}),
    Case("cc-by-nc", {"LICENSE": license_text("restricted/CC-BY-NC-4.0"), "a.py": CODE},
         {"a.py": both("license:cc-by-nc-4.0")}),
    Case("mit-without-sell", {"LICENSE": MIT_LICENSE.replace("and/or sell\n", ""), "a.py": CODE},
         {"a.py": both("license:modified")}),
    Case("mit-clause-appended", {"LICENSE": MIT_LICENSE + "\n-----\n\nAdditional terms: the Software may not be "
                                 "sold, or offered as a hosted service, without a commercial license from Acme.\n",
                                 "a.py": CODE}, {"a.py": both("license:modified")}),
    # license files we cannot identify beside permissive metadata
    Case("proprietary-isc", {"LICENSE": PROPRIETARY, "package.json": '{"name": "w", "license": "ISC"}', "a.py": CODE},
         {"a.py": both("license:unknown")}),
    Case("busl-stale-mit", {"LICENSE": license_text("restricted/BUSL-1.1"), "package.json": '{"license": "MIT"}',
                            "a.py": CODE}, {"a.py": both("license:busl-1.1")}),
    Case("custom-license", {"LICENSE": CUSTOM, "a.py": CODE}, {"a.py": both("license:unknown")}),
    # licenses below the root
    Case("contrib-gpl", {"LICENSE": MIT_LICENSE, "a.py": CODE, "contrib/foo/COPYING": GPL, "contrib/foo/b.py": CODE,
                         "contrib/c.py": CODE},
         {"a.py": KEPT, "contrib/foo/b.py": both("license:gpl-3.0"), "contrib/c.py": KEPT}),
    Case("spdx-header-gpl2", {"LICENSE": MIT_LICENSE, "a.py": CODE,
                              "b.py": ("# SPDX-License-Identifier: GPL-2.0-only\n", CODE)},
         {"a.py": KEPT, "b.py": both("license:gpl-2.0")}),
    Case("subpackage-gpl", {"LICENSE": MIT_LICENSE, "a.py": CODE, "packages/web/package.json":
                            '{"name": "web", "license": "GPL-3.0"}', "packages/web/b.py": CODE},
         {"a.py": KEPT, "packages/web/b.py": both("license:gpl-3.0")}),
    Case("reuse-layout", {"LICENSES/MIT.txt": MIT_LICENSE, "src/a.py": CODE}, {"src/a.py": KEPT}),
    Case("mit-inside-gpl", {"COPYING": GPL, "lib/sub/LICENSE": MIT_LICENSE, "lib/sub/a.py": CODE},
         {"lib/sub/a.py": both("license:gpl-3.0")}),
    Case("license-only-below", {"a.py": CODE, "sub/LICENSE": MIT_LICENSE, "sub/b.py": CODE},
         {"a.py": NO_LICENSE, "sub/b.py": KEPT}),
    Case("spdx-header-only", {"a.py": ("# SPDX-License-Identifier: MIT\n", CODE), "b.py": CODE},
         {"a.py": KEPT, "b.py": NO_LICENSE}),
    Case("docs-license-pointer", {"LICENSE": MIT_LICENSE, "docs/license.rst": "License\n=======\n\nSee the LICENSE "
                                  "file at the root of the repository.\n", "docs/a.py": CODE}, {"docs/a.py": KEPT}),
    # encodings and names of license and metadata files
    Case("latin1-copying", {"COPYING": GPL.replace("Copyright", "Copyright © Société Générale").encode("latin-1"),
                            "a.py": CODE}, {"a.py": both("license:gpl-3.0")}),
    Case("utf16-license", {"LICENSE": GPL.encode("utf-16"), "a.py": CODE}, {"a.py": both("license:gpl-3.0")}),
    Case("utf16-mit", {"LICENSE": MIT_LICENSE.encode("utf-16"), "a.py": CODE}, {"a.py": KEPT}),
    Case("gpl-named-file", {"gpl-3.0.txt": GPL, "a.py": CODE}, {"a.py": both("license:gpl-3.0")}),
    Case("crlf-bsd", {"LICENSE": license_text("BSD-3-Clause").replace("\n", "\r\n").encode(), "a.py": CODE},
         {"a.py": KEPT}),
    # package metadata in every format
    Case("pyproject-busl", {"pyproject.toml": '[project]\nname = "w"\nlicense = "BUSL-1.1"\n', "a.py": CODE},
         {"a.py": both("license:busl-1.1")}),
    Case("package-json-bom", {"package.json": b'\xef\xbb\xbf{"name": "w", "license": "GPL-3.0"}', "a.py": CODE},
         {"a.py": both("license:gpl-3.0")}),
    Case("setup-py-license", {"setup.py": "from setuptools import setup\n\nsetup(name='w', license='GPLv3')\n",
                              "w/a.py": CODE}, {"w/a.py": both("license:gpl-3.0")}),
    Case("setup-py-classifier", {"setup.py": SETUP_CLASSIFIERS, "a.py": CODE}, {"a.py": both("license:gpl-2.0")}),
    Case("setup-cfg-agpl", {"setup.cfg": "[metadata]\nname = w\nlicense = AGPL-3.0-or-later\n", "a.py": CODE},
         {"a.py": both("license:agpl-3.0")}),
    Case("npm-unlicensed", {"package.json": '{"name": "w", "license": "UNLICENSED"}', "a.py": CODE},
         {"a.py": both("license:unlicensed")}),
    Case("cargo-dual", {"Cargo.toml": '[package]\nname = "w"\nlicense = "MIT/Apache-2.0"\n', "a.py": CODE},
         {"a.py": KEPT}),
    Case("pyproject-permissive", {"pyproject.toml": '[project]\nname = "w"\nlicense = "MIT"\n', "a.py": CODE},
         {"a.py": KEPT}),
    # files that must never be read, in sources of every kind
    Case("symlink-out", {"LICENSE": MIT_LICENSE, "src/a.py": CODE}, {"src/a.py": KEPT,
                                                                     "src/passwd.py": both("read:symlink")},
         kind="dir", links={"src/passwd.py": "/etc/passwd"}),
    Case("odd-file-name", {"LICENSE": MIT_LICENSE, "a.py": CODE, b"caf\xe9.py": CODE},
         {"a.py": KEPT, "caf\\xe9.py": both("read:path_not_utf8")}, kind="dir"),
    Case("odd-name-in-git", {"LICENSE": MIT_LICENSE, "a.py": CODE, b"na\xefve.py": CODE},
         {"a.py": KEPT, "na\\xefve.py": both("read:path_not_utf8")}),
    Case("odd-folder-name", {"LICENSE": MIT_LICENSE, "a.py": CODE}, {"a.py": KEPT}, kind="dir",
         folder=b"d\xe9p\xf4t"),
    Case("archive-gpl-below", {"LICENSE": MIT_LICENSE, "a.py": CODE, "plugins/x/COPYING": GPL, "plugins/x/b.py": CODE},
         {"a.py": KEPT, "plugins/x/b.py": both("license:gpl-3.0")}, kind="tar"),
]


def _contents() -> Iterator[str]:
    for name in PROBES:
        yield (STDLIB / name).read_text(encoding="utf-8")


def _materialize(files: dict, code: Iterator[str]) -> dict[bytes, bytes]:
    out = {}
    for path, value in files.items():
        parts = value if isinstance(value, tuple) else (value,)
        data = b"".join(next(code).encode() if p is CODE else p if isinstance(p, bytes) else p.encode()
                        for p in parts)
        out[path if isinstance(path, bytes) else path.encode()] = data
    return out


def _write(root: Path, files: dict[bytes, bytes]) -> None:
    for rel, data in files.items():
        target = os.path.join(os.fsencode(root), rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)


def build_corpus(root: Path) -> Path:
    """Every case under `root/repos` (git repositories, plain folders, a .tar.gz); returns that folder."""
    repos = root / "repos"
    code = _contents()
    for case in CASES:
        files = _materialize(case.files, code)
        if case.kind == "tar":
            with tarfile.open(repos / f"{case.name}.tar.gz", "w:gz") as tf:
                for rel, data in files.items():
                    info = tarfile.TarInfo(f"{case.name}-main/{rel.decode()}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
            continue
        folder = Path(os.fsdecode(os.path.join(os.fsencode(repos), case.folder or case.name.encode())))
        _write(folder, files)
        for link, target in case.links.items():
            os.symlink(target, folder / link)
        if case.kind == "git":
            make_git_repo(folder, {})
    return repos


def verdicts(out: Path) -> dict[tuple[str, str], str | None]:
    """(repo, path) → reason (None for kept files) from a curated dataset/."""
    return {key: reason for key, (reason, _) in rows(out).items()}


def rows(out: Path) -> dict[tuple[str, str], tuple[str | None, list[str]]]:
    """(repo, path) → (reason, licenses) from a curated dataset/."""
    found: dict[tuple[str, str], tuple[str | None, list[str]]] = {}
    for sub in ("data", "removed"):
        table = pq.read_table(out / sub / "files")
        reasons = table.column("reason").to_pylist() if "reason" in table.column_names else [None] * table.num_rows
        for repo, path, reason, licenses in zip(table.column("repo_name").to_pylist(), table.column("path").to_pylist(),
                                                reasons, table.column("licenses").to_pylist(), strict=True):
            found[(repo, path)] = (reason, licenses)
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`corpus(policy)`: the dataset/ the CLI curated from every case under that policy (each run once)."""
    root = tmp_path_factory.mktemp("license_corpus")
    repos = build_corpus(root)
    done: set[str] = set()

    def curated(policy: str) -> Path:
        out = root / policy.replace("+", "_")
        if policy not in done:
            assert run(["data", "curate", str(repos), "--out", str(out), "--license-policy", policy, "-j", "1"]) == 0
            done.add(policy)
        return out

    return curated


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)
    assert sum(len(c.expect) for c in CASES) <= len(PROBES) + 10


@pytest.mark.parametrize("policy", ["permissive", "permissive+no_license"])
def test_every_file_gets_its_verdict(corpus: Callable[[str], Path], policy: str) -> None:
    got = verdicts(corpus(policy))
    column = 0 if policy == "permissive" else 1
    wrong = []
    for case in CASES:
        repo = case.repo
        for path, expected in case.expect.items():
            actual = got.get((repo, path), "missing")
            if actual != expected[column]:
                wrong.append(f"{repo}/{path}: expected {expected[column]}, got {actual}")
    assert not wrong, "\n".join(wrong)



def test_removed_rows_name_the_license_they_matched(corpus: Callable[[str], Path]) -> None:
    got = rows(corpus("permissive"))
    assert got[("mit-non-commercial", "a.py")] == ("license:modified", ["LicenseRef-modified", "MIT"])
    assert got[("bsd3-no-military", "a.py")] == ("license:modified", ["BSD-3-Clause", "LicenseRef-modified"])
    assert got[("apache-commons-clause", "a.py")][1] == ["Apache-2.0", "LicenseRef-Commons-Clause"]
    assert got[("proprietary-isc", "a.py")][1] == ["ISC", "LicenseRef-unknown"]
    assert got[("contrib-gpl", "contrib/foo/b.py")][1] == ["GPL-3.0", "MIT"]
    assert got[("contrib-gpl", "a.py")] == (None, ["MIT"])

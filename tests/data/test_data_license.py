"""License identification by text, metadata and SPDX headers; The Stack v2 license types."""

from __future__ import annotations

import random
import textwrap

import pytest

from codefoundry.data.license import (
    UNKNOWN,
    LicenseEvidence,
    decode_lenient,
    detect,
    from_core_metadata,
    from_license_text,
    from_metadata,
    identify,
    is_license_file,
    license_file_ids,
    license_type,
    spdx_headers,
)
from conftest import MIT_LICENSE
from fixtures_data import license_text

REQUIRED = ["MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC", "Unlicense", "0BSD", "Zlib", "PSF-2.0",
            "CC0-1.0", "MPL-2.0", "LGPL-2.1", "LGPL-3.0", "GPL-2.0", "GPL-3.0", "AGPL-3.0", "EPL-2.0"]


def small_edits(text: str, seed: int = 0) -> str:
    """Reflow to 50 columns, add a copyright line, and misspell ~2% of the words."""
    rng = random.Random(seed)
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, len(words) // 50)):
        words[i] = words[i][::-1] + "x"
    return "Copyright (c) 1999-2024 Jane Q. Hacker <jane@example.com>\nAll rights reserved.\n\n" + textwrap.fill(
        " ".join(words), 50)


@pytest.mark.parametrize("spdx", REQUIRED)
def test_each_required_license_is_identified_verbatim_and_edited(spdx: str) -> None:
    text = license_text(spdx)
    assert identify(text) == [spdx]
    assert identify(small_edits(text)) == [spdx]


def test_similar_licenses_are_told_apart() -> None:
    assert identify(license_text("BSD-2-Clause")) == ["BSD-2-Clause"]  # not BSD-3 (a superset)
    assert identify(license_text("AGPL-3.0")) == ["AGPL-3.0"]          # not GPL-3.0
    assert identify(license_text("0BSD")) == ["0BSD"]                  # not ISC


def test_two_licenses_in_one_file_in_order_of_appearance() -> None:
    both = MIT_LICENSE + "\n\n---- bundled code ----\n\n" + license_text("Apache-2.0")
    assert identify(both) == ["MIT", "Apache-2.0"]


def test_notices_and_non_licenses() -> None:
    notice = ("# Licensed under the Apache License, Version 2.0 (the \"License\"); you may not use this file except\n"
              "# in compliance with the License. You may obtain a copy of the License at\n"
              "# http://www.apache.org/licenses/LICENSE-2.0\n# Unless required by applicable law or agreed to in "
              "writing, software distributed under the License is distributed on an \"AS IS\" BASIS, WITHOUT "
              "WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the License for the specific "
              "language governing permissions and limitations under the License.")
    assert identify(notice) == ["Apache-2.0"]
    assert identify("This project is licensed under the terms of the MIT license, see the website.") == []
    assert identify("def f():\n    return 1\n" * 20) == []


@pytest.mark.parametrize(("path", "expected"), [
    ("LICENSE", True), ("LICENSE.md", True), ("COPYING", True), ("COPYING.LESSER", True), ("MIT-LICENSE", True),
    ("NOTICE", True), ("LICENSES/Apache-2.0.txt", True), ("licence.txt", True), ("src/LICENSE", True),
    ("gpl-3.0.txt", True), ("GPL-2.0", True), ("lgpl-2.1.txt", True), ("docs/COPYING.txt", True), ("UNLICENSE", True),
    ("LICENSE-MIT", True), ("COPYRIGHT", True), ("mit.txt", True), ("Apache-2.0.md", True),
    ("license_check.py", False), ("README.md", False), ("requirements.txt", False), ("gpl.py", False),
    ("notes.txt", False), ("licensing.go", False),
])
def test_is_license_file(path: str, expected: bool) -> None:
    assert is_license_file(path) is expected


def test_metadata_files() -> None:
    assert from_metadata("pyproject.toml", '[project]\nname = "x"\nlicense = "MIT OR Apache-2.0"\n') == [
        "Apache-2.0 OR MIT"]
    assert from_metadata("pyproject.toml", '[project]\nlicense = {text = "BSD-3-Clause"}\n') == ["BSD-3-Clause"]
    assert from_metadata("pyproject.toml", '[project]\nclassifiers = ["License :: OSI Approved :: MIT License"]\n'
                         ) == ["MIT"]
    assert from_metadata("package.json", '{"name": "x", "license": "ISC"}') == ["ISC"]
    assert from_metadata("Cargo.toml", '[package]\nlicense = "MIT/Apache-2.0"\n') == ["Apache-2.0 OR MIT"]
    assert from_metadata("Cargo.toml", '[package]\nlicense = "MIT OR Apache-2.0"\n') == ["Apache-2.0 OR MIT"]
    assert from_metadata("setup.cfg", "[metadata]\nlicense = Apache 2.0\n") == ["Apache-2.0"]
    assert from_metadata("pyproject.toml", "not [valid toml") == []
    meta = "Metadata-Version: 2.4\nName: x\nLicense-Expression: GPL-3.0-or-later\n\nLong description\n"
    assert from_core_metadata(meta) == ["GPL-3.0"]
    meta = "Metadata-Version: 2.1\nName: x\nClassifier: License :: OSI Approved :: ISC License (ISCL)\n"
    assert from_core_metadata(meta) == ["ISC"]


def test_spdx_headers() -> None:
    assert spdx_headers("// SPDX-License-Identifier: MIT\nint x;\n") == ["MIT"]
    assert spdx_headers("/* SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note */\n") == ["GPL-2.0"]
    assert spdx_headers("x = 1\n") == []


def test_each_kind_of_evidence_applies_to_its_scope() -> None:
    got = detect({"LICENSE": MIT_LICENSE, "a.py": "# SPDX-License-Identifier: GPL-3.0-only\n", "b.py": "x = 1\n",
                  "contrib/foo/COPYING": license_text("GPL-3.0"), "contrib/foo/x.c": "int x;\n",
                  "contrib/bar.c": "int y;\n", "pkg/package.json": '{"license": "GPL-3.0"}', "pkg/index.js": "1\n"})
    assert got["b.py"] == ["MIT"]                        # the root license file
    assert got["a.py"] == ["GPL-3.0", "MIT"]             # plus its own header
    assert got["contrib/foo/x.c"] == ["GPL-3.0", "MIT"]  # a license file below the root, for its folder
    assert got["contrib/bar.c"] == ["MIT"]               # ... and not for its siblings
    assert got["pkg/index.js"] == ["GPL-3.0", "MIT"]     # sub-package metadata, for its folder
    assert detect({"a.c": "// SPDX-License-Identifier: Apache-2.0\n", "b.c": "int x;"}) == {
        "a.c": ["Apache-2.0"], "b.c": []}
    assert detect({"COPYING": license_text("GPL-3.0"), "COPYING.LESSER": license_text("LGPL-3.0")})["COPYING"] == [
        "LGPL-3.0"]
    assert detect({"main.py": "print(1)\n"}) == {"main.py": []}
    assert detect({"LICENSES/MIT.txt": MIT_LICENSE, "src/a.py": "1\n"})["src/a.py"] == ["MIT"]  # REUSE: the parent
    vendored = detect({"LICENSE": MIT_LICENSE, "_vendor/dep-1.0.dist-info/licenses/COPYING": license_text("GPL-3.0"),
                       "_vendor/dep/a.py": "1\n", "b.py": "2\n"})
    assert vendored["_vendor/dep/a.py"] == ["GPL-3.0", "MIT"] and vendored["b.py"] == ["MIT"]
    evidence = LicenseEvidence()
    evidence.add_file("package.json", '{"license": "MIT"}')
    evidence.add_file("LICENSE", license_text("Apache-2.0"))
    assert evidence.licenses() == ["Apache-2.0", "MIT"]


MIT_BODY = MIT_LICENSE.split("SOFTWARE.\n", 1)[0]


def _insert(text: str, after: str, clause: str) -> str:
    assert after in text
    return text.replace(after, after + clause, 1)


RESTRICTED_VARIANTS = {
    "MIT + Good, not Evil": _insert(MIT_LICENSE, "portions of the Software.\n",
                                    "\nThe Software shall be used for Good, not Evil.\n"),
    "MIT + non-commercial grant": MIT_LICENSE.replace("and/or sell\ncopies of the Software",
                                                      "copies of the Software for non-commercial purposes only"),
    "MIT + non-commercial clause": MIT_LICENSE + "\nThe Software may not be used for commercial purposes.\n",
    "BSD-3-Clause + non-military clause": license_text("BSD-3-Clause") +
    "\n4. This software may not be used in military applications or in the development of weapons.\n",
    "BSD-3-Clause + research only": _insert(license_text("BSD-3-Clause"), "following conditions are met:\n",
                                            "\n0. Use is permitted for academic research purposes only.\n"),
    "Apache-2.0 + Commons Clause": license_text("restricted/LicenseRef-Commons-Clause") + "\n\n" +
    license_text("Apache-2.0"),
    "Apache-2.0 + reworded Commons Clause": license_text("Apache-2.0") + "\n\nThe license granted above does not "
    "include the right to sell the Software or to offer it as a hosted service.\n",
    "ISC + personal use": license_text("ISC") + "\nPersonal use only; contact the author for other uses.\n",
    "MIT without the right to sell": MIT_LICENSE.replace("and/or sell\n", ""),
    "BSD-3-Clause for unmodified copies": license_text("BSD-3-Clause").replace("with or without\nmodification", ""),
}


@pytest.mark.parametrize("name", sorted(RESTRICTED_VARIANTS))
def test_restricted_variants_are_not_the_permissive_original(name: str) -> None:
    ids = from_license_text(RESTRICTED_VARIANTS[name])
    assert license_type(ids) == "non_permissive", ids
    assert any(i in ids for i in ("MIT", "BSD-3-Clause", "Apache-2.0", "ISC", "JSON"))  # matched ids are kept


def test_named_restricted_licenses() -> None:
    assert from_license_text(license_text("restricted/JSON")) == ["JSON"]
    assert from_license_text(license_text("restricted/CC-BY-NC-4.0")) == ["CC-BY-NC-4.0"]
    assert from_license_text(license_text("restricted/BUSL-1.1"))[0] == "BUSL-1.1"
    assert from_license_text(license_text("CC-BY-4.0")) == ["CC-BY-4.0"]  # the original is still itself
    assert from_license_text(license_text("MIT")) == ["MIT"]


@pytest.mark.parametrize("text", [
    MIT_LICENSE.replace("MIT License", "The MIT License (MIT)\n\nThis project is released under these terms:"),
    MIT_LICENSE + "\nThis software is free for commercial and non-commercial use.\n",
    license_text("BSD-3-Clause").replace("the copyright holder", "Acme Widgets Incorporated of Springfield"),
    MIT_LICENSE + "\nExcept as contained in this notice, the name of Acme shall not be used in advertising.\n",
])
def test_harmless_additions_keep_the_license(text: str) -> None:
    ids = from_license_text(text)
    assert license_type(ids) == "permissive", ids


def test_license_files_we_cannot_identify_are_evidence() -> None:
    proprietary = "Copyright (c) 2024 Acme Corp.\nAll rights reserved.\n\nThis software is proprietary and " \
                  "confidential. Unauthorized copying of this file, via any medium, is strictly prohibited.\n"
    assert from_license_text(proprietary) == [UNKNOWN]
    assert detect({"LICENSE": proprietary, "package.json": '{"license": "ISC"}', "a.js": "1\n"})["a.js"] == [
        "ISC", UNKNOWN]
    assert from_license_text("Copyright (c) 2024 Jane Doe\n") == []                    # a bare copyright line
    assert from_license_text("See the LICENSE file at the root of the project.\n") == []  # a pointer
    assert from_license_text("This project is released under the MIT License.\n") == ["MIT"]
    assert from_license_text("Licensed under the Apache License, Version 2.0.\n") == ["Apache-2.0"]
    assert license_file_ids("NOTICE", "Acme Widgets\nThis product includes software developed at Acme.\n") == []
    assert license_file_ids("AUTHORS", "Jane Doe <jane@example.com>\nJohn Roe <john@example.com>\n" * 20) == []


def test_metadata_declarations_we_do_not_know_are_not_none() -> None:
    assert from_metadata("pyproject.toml", '[project]\nlicense = "BUSL-1.1"\n') == ["BUSL-1.1"]
    assert from_metadata("pyproject.toml", '[project]\nlicense = "LicenseRef-Acme-EULA"\n') == [
        "LicenseRef-Acme-EULA"]
    assert from_metadata("package.json", '{"license": "UNLICENSED"}') == ["UNLICENSED"]
    assert from_metadata("package.json", '{"license": "SEE LICENSE IN EULA.txt"}') == []
    assert from_metadata("setup.cfg", "[metadata]\nlicense = Proprietary\n") == ["Proprietary"]
    assert from_metadata("setup.cfg", "[metadata]\nlicense = Free for non-commercial use, ask us otherwise\n") == [
        UNKNOWN]
    assert from_metadata("setup.cfg", "[metadata]\nlicense = UNKNOWN\n") == []
    assert from_metadata("pyproject.toml", '[project]\nlicense = "BSD-3-Clause and Public-Domain"\n') == [
        "BSD-3-Clause", "Unlicense"]
    assert from_core_metadata("Name: x\nLicense: 3-Clause BSD License\n") == ["BSD-3-Clause"]
    assert from_core_metadata("Name: x\nLicense: Apache 2.0 License\n") == ["Apache-2.0"]
    assert from_core_metadata("Name: x\nLicense: Custom\nClassifier: License :: OSI Approved :: MIT License\n") == [
        "Custom"]
    assert from_core_metadata("Name: x\nLicense: see the website\nClassifier: License :: OSI Approved :: MIT "
                              "License\n") == ["MIT"]  # free text that names nothing: the classifier speaks
    assert from_core_metadata("Name: x\nClassifier: License :: Other/Proprietary License\n") == [UNKNOWN]


def test_setup_py_is_read_not_run(tmp_path) -> None:
    marker = tmp_path / "ran"
    setup = (f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nfrom setuptools import setup\n"
             "setup(name='x', license='GPLv3', classifiers=['Programming Language :: Python'])\n")
    assert from_metadata("setup.py", setup) == ["GPL-3.0"]
    assert not marker.exists()
    classifiers = ("import setuptools\nsetuptools.setup(name='x', classifiers=[\n"
                   "    'License :: OSI Approved :: GNU General Public License v2 (GPLv2)'])\n")
    assert from_metadata("setup.py", classifiers) == ["GPL-2.0"]
    assert from_metadata("setup.py", "setup(license=LICENSE_FROM_ELSEWHERE)\n") == []
    assert from_metadata("setup.py", "def broken(:\n") == []


@pytest.mark.parametrize(("encoding", "prefix"), [("utf-8", b""), ("utf-8-sig", b""), ("utf-16", b""),
                                                  ("utf-16-le", b""), ("latin-1", b""), ("utf-32", b"")])
def test_license_and_metadata_files_decode_leniently(encoding: str, prefix: bytes) -> None:
    text = license_text("GPL-3.0").replace("Copyright", "Copyright © Jürgen Müller")
    assert "GPL-3.0" in from_license_text(decode_lenient(prefix + text.encode(encoding)))
    meta = '{"name": "café", "license": "GPL-3.0"}'
    assert from_metadata("package.json", decode_lenient(meta.encode(encoding))) == ["GPL-3.0"]


def test_license_type_follows_the_stack_v2() -> None:
    assert license_type(["MIT"]) == "permissive"
    assert license_type(["MIT", "Apache-2.0"]) == "permissive"
    assert license_type([]) == "no_license"
    assert license_type(["MIT", "GPL-3.0"]) == "non_permissive"
    assert license_type(["MPL-2.0"]) == "non_permissive"
    assert license_type(["MPL-2.0"], permissive=["MPL-2.0"]) == "permissive"
    assert license_type(["MIT", "LicenseRef-modified"], permissive=["MIT", "LicenseRef-modified"]) == "non_permissive"

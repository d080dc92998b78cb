"""License identification by text, metadata and SPDX headers; The Stack v2 license types."""

from __future__ import annotations

import random
import textwrap

import pytest

from codefoundry.data.license import (
    LicenseEvidence,
    detect,
    from_core_metadata,
    from_metadata,
    identify,
    is_license_file,
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
    ("NOTICE", True), ("LICENSES/Apache-2.0.txt", True), ("licence.txt", True),
    ("src/LICENSE", False), ("license_check.py", False), ("README.md", False),
])
def test_is_license_file(path: str, expected: bool) -> None:
    assert is_license_file(path) is expected


def test_metadata_files() -> None:
    assert from_metadata("pyproject.toml", '[project]\nname = "x"\nlicense = "MIT OR Apache-2.0"\n') == [
        "MIT", "Apache-2.0"]
    assert from_metadata("pyproject.toml", '[project]\nlicense = {text = "BSD-3-Clause"}\n') == ["BSD-3-Clause"]
    assert from_metadata("pyproject.toml", '[project]\nclassifiers = ["License :: OSI Approved :: MIT License"]\n'
                         ) == ["MIT"]
    assert from_metadata("package.json", '{"name": "x", "license": "ISC"}') == ["ISC"]
    assert from_metadata("Cargo.toml", '[package]\nlicense = "MIT/Apache-2.0"\n') == ["MIT", "Apache-2.0"]
    assert from_metadata("Cargo.toml", '[package]\nlicense = "MIT OR Apache-2.0"\n') == ["MIT", "Apache-2.0"]
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


def test_repository_evidence_order() -> None:
    assert detect({"LICENSE": MIT_LICENSE, "a.py": "# SPDX-License-Identifier: GPL-3.0-only\n"}) == ["MIT"]
    assert detect({"a.c": "// SPDX-License-Identifier: Apache-2.0\n", "b.c": "int x;"}) == ["Apache-2.0"]
    assert detect({"COPYING": license_text("GPL-3.0"), "COPYING.LESSER": license_text("LGPL-3.0")}) == ["LGPL-3.0"]
    assert detect({"main.py": "print(1)\n"}) == []
    evidence = LicenseEvidence()
    evidence.add_file("package.json", '{"license": "MIT"}')
    evidence.add_file("LICENSE", license_text("Apache-2.0"))
    assert evidence.licenses() == ["Apache-2.0", "MIT"]


def test_license_type_follows_the_stack_v2() -> None:
    assert license_type(["MIT"]) == "permissive"
    assert license_type(["MIT", "Apache-2.0"]) == "permissive"
    assert license_type([]) == "no_license"
    assert license_type(["MIT", "GPL-3.0"]) == "non_permissive"
    assert license_type(["MPL-2.0"]) == "non_permissive"
    assert license_type(["MPL-2.0"], permissive=["MPL-2.0"]) == "permissive"

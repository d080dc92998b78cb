"""Reading a distribution's metadata the fast way gives what the plain way gives: a header read line by line is
the email parser's value, SPDX ids known from the reference files' names are those of the reference texts, and a
license text pasted into a metadata field is identified as a license file is."""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import random
from importlib import metadata, resources

import pytest

from codefoundry.data.license import metadata as license_metadata
from codefoundry.data.license import spdx
from codefoundry.data.license.match import identify, references
from codefoundry.data.license.metadata import declared, from_core_metadata
from codefoundry.data.license.spdx import canonical, from_name, known_ids, parse_expression
from codefoundry.data.sources.python_env import _UNSURE, distributions, header_value


def parser_value(text: str, field: str) -> str | None:
    return email.parser.Parser(policy=email.policy.compat32).parsestr(text, headersonly=True)[field]


LINES = ["Metadata-Version: 2.1", "Name: plain", "name: lower", "NAME:upper", "Name:   spaced  ", "Name:\ttabbed",
         "Name:", "Name: Zoë-ünï", "Version: 1.0", "Summary: a: b: c", "  continued", "\tcontinued tab", " ",
         "From someone", "Name : spaced-colon", "no colon here", ": empty name", "Näme: non-ascii field",
         "X-Name: other", "Names: other", "Name: cr\r", "Name: vt\x0bhere", "Name: u\u2028sep", "",
         "License: MIT", "Name: second"]


def test_header_values_are_the_email_parsers() -> None:
    rng = random.Random(7)
    texts = ["", "\n", "Name: x", "Name: x\n", "\nName: x\n", "Name: x\n\nName: y\n", "Name: x\r\nVersion: 1\r\n",
             "Name: folded\n  continued\nSummary: s\n", "Metadata-Version: 2.1\nVersion: 1\n\nName: body\n"]
    for _ in range(3000):
        texts.append("\n".join(rng.choice(LINES) for _ in range(rng.randint(1, 8))) + rng.choice(["", "\n", "\n\n"]))
    for dist in distributions():  # every installed distribution's METADATA
        texts.append(metadata.Distribution.at(dist).read_text("METADATA") or "")
    sure = 0
    for text, field in itertools.product(texts, ("name", "version", "license")):
        fast = header_value(text, field)
        if fast is not _UNSURE:
            sure += 1
            assert fast == parser_value(text, field), (text, field)
    assert sure > len(texts)  # most texts are read without the parser


def test_header_value_defers_where_the_parser_reads_otherwise() -> None:
    for text in ("From me\nName: x\n", "Name: x\r\n", "junk\nName: x\n", "Name : x\n", ": y\nName: x\n"):
        assert header_value(text, "name") is _UNSURE, text


def test_known_ids_are_the_reference_texts() -> None:
    assert known_ids() == {ref.spdx.lower(): ref.spdx for ref in references()} | {"python-2.0": "Python-2.0"}


def test_ids_from_names_and_expressions_use_the_known_ids() -> None:
    assert spdx._known() == set(known_ids().values())
    words = " ".join(license_texts()).split() + [i + s for i in known_ids().values() for s in ("", "+", "-only")]
    for word in words:  # the cached lookups are the plain functions
        assert spdx._license_id(word) == spdx._license_id.__wrapped__(word)
        assert canonical(word) == canonical.__wrapped__(word)
    assert parse_expression("mit OR apache-2.0+ AND (BSD-3-Clause WITH Foo-exception)") == \
        ["MIT OR (Apache-2.0 AND BSD-3-Clause)"]
    assert from_name("MIT AND Made-Up-1.0") == [] and from_name("gpl-3.0-or-later") == ["GPL-3.0"]


def license_texts() -> list[str]:
    root = resources.files("codefoundry.data.license").joinpath("texts")
    texts = sorted(e.read_text(encoding="utf-8") for e in root.iterdir() if e.name.endswith(".txt"))
    return [*texts[:12], texts[0].replace("\n", "\r\n"), "Zoë " * 80 + texts[1], "word " * 60]


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEFOUNDRY_CACHE", str(tmp_path / "cache"))
    yield tmp_path / "cache"


def test_pasted_license_texts_are_identified_as_license_files_are(cache_home) -> None:
    texts = license_texts()
    core = "Metadata-Version: 2.1\nName: x\nLicense: " + texts[0].replace("\n", "\n        |") + "\n\nbody\n"
    for text in texts:
        expected = identify(text.strip())
        assert declared(text) == (expected or license_metadata.names_in(text.strip()) or [license_metadata.UNKNOWN])
    assert from_core_metadata(core) != ["LicenseRef-unknown"]


"""Hostile notebooks and license files: the notebook rewrite gives text or a NotebookError, the matcher known ids.

Notebooks are any JSON (nbformat-shaped with fields of the wrong type, or not at all), text
that is not JSON, and nesting past Python's stack. License texts are shuffled fragments of the
shipped reference texts, separators, SPDX-like noise and random words; each must be matched
within the deadline, and every id returned must be one the references define.
"""

from __future__ import annotations

import json
from importlib import resources

from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from codefoundry.data.license.match import identify, references
from codefoundry.data.subsets.notebooks import NotebookError, rewrite

TEXT = st.text(max_size=30) | st.sampled_from(["\x1b[31mred", "\ud800", "é€😀", "print(1)\n", ""])
SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT
ANY = st.recursive(SCALAR, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3),
                   max_leaves=10)
OUTPUT = st.fixed_dictionaries({"output_type": st.sampled_from(["stream", "execute_result", "display_data", "error",
                                                                "bogus"])},
                               optional={"text": ANY, "data": ANY, "name": ANY, "ename": ANY, "evalue": ANY,
                                         "traceback": ANY, "metadata": ANY, "execution_count": ANY})
CELL = st.fixed_dictionaries({"cell_type": st.sampled_from(["code", "markdown", "raw", "bogus"]) | ANY,
                              "source": st.lists(TEXT, max_size=3) | TEXT | ANY},
                             optional={"outputs": st.lists(OUTPUT, max_size=2) | ANY, "metadata": ANY,
                                       "execution_count": ANY, "id": ANY})
KERNEL = st.fixed_dictionaries({}, optional={"kernelspec": ANY | st.fixed_dictionaries(
    {"language": TEXT, "name": TEXT}), "language_info": ANY | st.fixed_dictionaries({"name": TEXT})})
NOTEBOOK = st.fixed_dictionaries({"cells": st.lists(CELL, max_size=4) | ANY, "metadata": KERNEL | ANY},
                                 optional={"nbformat": st.sampled_from([4, 3, 5, 0, "4"]) | ANY,
                                           "nbformat_minor": st.integers(-1, 10) | ANY})


@fuzz(20)
@given(nb=NOTEBOOK | ANY, form=st.sampled_from(["structured", "script"]), raw=st.booleans())
def test_fuzz_notebook_rewrite_is_text_or_a_notebook_error(nb, form, raw):
    text = json.dumps(nb) if not raw else json.dumps(nb)[: max(1, len(json.dumps(nb)) // 2)]
    try:
        body, lang, dropped = rewrite(text, form, 100)
    except NotebookError as e:
        assert e.reason.startswith("notebook:")
        return
    assert isinstance(body, str) and isinstance(lang, str) and dropped >= 0


def test_notebook_nested_past_the_stack_is_invalid_json_not_a_crash():
    for text in ("[" * 100_000, '{"cells": ' + "[" * 100_000):
        try:
            rewrite(text, "structured", 100)
        except NotebookError as e:
            assert e.reason in ("notebook:invalid_json", "notebook:invalid_schema")


def _reference_words() -> list[str]:
    root = resources.files("codefoundry.data.license").joinpath("texts")
    words = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".txt"):
            words += entry.read_text(encoding="utf-8").split()[:400]
    return words


WORDS = _reference_words()
LICENSE_PIECE = st.builds(lambda start, n: " ".join(WORDS[start: start + n]), st.integers(0, len(WORDS) - 1),
                          st.integers(0, 300))
NOISE = st.sampled_from(["\n-----\n", "\n=====\n", "SPDX-License-Identifier: MIT", "Copyright (c) 2024", "\0",
                         "\x1b[0m", "\ufeff", "GPL" * 50]) | st.text(max_size=40)


@fuzz(25)
@given(pieces=st.lists(LICENSE_PIECE | NOISE, max_size=8))
def test_fuzz_license_matcher_returns_known_ids(pieces):
    known = {ref.spdx for ref in references()}
    ids = identify("\n".join(pieces))
    assert set(ids) <= known and len(ids) == len(set(ids))

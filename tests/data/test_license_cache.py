"""License-file verdicts read back from the on-disk cache equal the verdicts judged anew: for every reference
text, restricted and narrowed copies, statements, NOTICE-like and other names, two thresholds; a damaged pack
is judged again, an unwritable cache changes nothing, packs merge, a forked worker writes its own verdicts, and a
change to the matcher's files changes its folder."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import sys
from importlib import resources

import pytest

from codefoundry.data.license import cache, match, spdx, verdict
from codefoundry.data.license.verdict import _decide, license_file_ids


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEFOUNDRY_CACHE", str(tmp_path / "cache"))
    restart()
    yield tmp_path / "cache"
    restart()


def restart() -> None:
    """As a new process: nothing known but what the packs on disk hold."""
    cache.flush()
    cache._STORES.clear()
    verdict._file_ids.cache_clear()
    match._identify.cache_clear()


def packs(home) -> dict[str, dict]:
    where = home / "license" / cache.matcher_hash()
    return {p.name: json.loads(p.read_text()) for p in where.glob("*.json")} if where.is_dir() else {}


def corpus() -> list[tuple[str, str]]:
    """(path, text): reference texts as they are and changed, and short files of each kind."""
    root = resources.files("codefoundry.data.license").joinpath("texts")
    texts = sorted((e.name, e.read_text(encoding="utf-8")) for e in root.iterdir() if e.name.endswith(".txt"))
    out: list[tuple[str, str]] = []
    for name, text in texts[:40]:
        out.append(("LICENSE", text))
        out.append(("NOTICE", text))
        out.append((f"sub/{name}", "Copyright (c) 2024 Zoë Ünïcode\n\n" + text.replace("\n", "\r\n")))
    mit = dict(texts)["MIT.txt"]
    out += [("LICENSE", mit + "\nThe Software may not be used for commercial purposes.\n"),
            ("LICENSE", mit.replace("sell", "")),
            ("LICENSE", "This project is licensed under the MIT License."),
            ("NOTICE", "This product includes software developed by Example Corp."),
            ("LICENSE.txt", "This product includes software developed by Example Corp."),
            ("COPYING", ""), ("LICENSE", "Copyright 2020 Someone"), ("LICENSE", "see LICENSE.BSD"),
            ("LICENSE", "Tous droits réservés. Usage personnel uniquement. 🎉 \udcff")]
    return out


def test_cached_verdicts_equal_fresh_ones(cache_home):
    files = corpus()
    for threshold in (0.75, 0.9):
        fresh = [_decide(verdict.is_notice_file(p), t, threshold) for p, t in files]
        assert any(ids == [] for ids in fresh) and any("LicenseRef-unknown" in ids for ids in fresh)
        assert any("LicenseRef-modified" in ids for ids in fresh) and any("MIT" in ids for ids in fresh)
        cold = [license_file_ids(p, t, threshold) for p, t in files]
        restart()
        warm = [license_file_ids(p, t, threshold) for p, t in files]
        assert cold == fresh and warm == fresh
    # one entry per distinct (NOTICE-like, text, threshold): the NOTICE of a statement is not the LICENSE's
    written = packs(cache_home)
    entries = [name for pack in written.values() for name in pack]
    assert len(entries) == len(set(entries)) == 2 * len({(verdict.is_notice_file(p), t) for p, t in files})
    assert 1 < len(written) <= len(entries) // cache.FLUSH_EVERY + 2  # written a pack at a time


def test_entries_are_read_not_recomputed(cache_home, monkeypatch):
    """Written by another process (at its exit), read here without judging."""
    code = ("from codefoundry.data.license.verdict import license_file_ids\n"
            "print(license_file_ids('LICENSE', 'This project is licensed under the MIT License.'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(packs(cache_home)) == 1
    monkeypatch.setattr(verdict, "_decide", lambda *a: pytest.fail("judged again despite a stored verdict"))
    assert license_file_ids("LICENSE", "This project is licensed under the MIT License.") == ["MIT"]


def test_damaged_packs_and_unwritable_cache(cache_home, tmp_path, monkeypatch):
    text = "This project is licensed under the Apache License 2.0."
    expected = license_file_ids("LICENSE", text)
    restart()
    (name, pack), = packs(cache_home).items()
    where = cache.folder()
    assert pack == {cache.entry_name("file", text, 0.75): expected}
    for damage in ("[", json.dumps({cache.entry_name("file", text, 0.75): [1, 2]}), "[1, 2]", "", "\udcff"):
        (where / name).write_text(damage, errors="surrogateescape")
        restart()
        monkeypatch.setattr(verdict, "_decide", lambda *a: ["judged again"])
        assert license_file_ids("LICENSE", text) == ["judged again"]
        monkeypatch.undo()
        monkeypatch.setenv("CODEFOUNDRY_CACHE", str(cache_home))
        for other in where.glob("*.json"):
            if other.name != name:
                other.unlink()
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("CODEFOUNDRY_CACHE", str(blocked))
    restart()
    assert license_file_ids("LICENSE", text) == expected
    restart()  # the pack cannot be written: nothing lost but the work
    assert license_file_ids("LICENSE", text) == expected


def test_packs_merge_into_one(cache_home, monkeypatch):
    monkeypatch.setattr(cache, "FLUSH_EVERY", 2)
    texts = [f"This project is licensed under the MIT License. Item {k}." for k in range(2 * (cache.MAX_PACKS + 3))]
    expected = [license_file_ids("LICENSE", t) for t in texts]
    restart()
    assert len(packs(cache_home)) == cache.MAX_PACKS + 3
    assert cache.load(cache.entry_name("file", texts[0], 0.75)) == tuple(expected[0])  # reading merges them
    (merged,) = packs(cache_home).values()
    assert merged == {cache.entry_name("file", t, 0.75): ids for t, ids in zip(texts, expected, strict=True)}
    restart()
    monkeypatch.setattr(verdict, "_decide", lambda *a: pytest.fail("judged again despite a merged verdict"))
    assert [license_file_ids("LICENSE", t) for t in texts] == expected


def _judge_in_worker(text: str) -> list[str]:
    return license_file_ids("LICENSE", text)


def test_a_forked_worker_writes_its_own_verdicts(cache_home):
    parent_text, child_text = "Licensed under the MIT License.", "Licensed under the Apache License 2.0."
    license_file_ids("LICENSE", parent_text)  # pending in this process when it forks
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_judge_in_worker, (child_text,)) == ["Apache-2.0"]
        pool.close()
        pool.join()
    written = [name for pack in packs(cache_home).values() for name in pack]
    assert written == [cache.entry_name("file", child_text, 0.75)]  # the parent's pending left to the parent
    cache.flush()
    assert sorted(n for pack in packs(cache_home).values() for n in pack) == sorted(
        cache.entry_name("file", t, 0.75) for t in (parent_text, child_text))


def test_a_changed_matcher_gets_another_folder(tmp_path):
    copy = tmp_path / "license"
    shutil.copytree(cache.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    fresh = cache.matcher_hash.__wrapped__  # not the per-process memo
    assert fresh(copy) == cache.matcher_hash()
    (copy / "texts" / "MIT.txt").write_text((copy / "texts" / "MIT.txt").read_text() + "\nextra")
    assert fresh(copy) != cache.matcher_hash()


def plain_identify(text: str, threshold: float) -> list[str]:
    found: list[str] = []
    for section in match.examine(text, threshold):
        found += [i for i in section.ids if i not in found]
    return found


def test_identify_read_back_equals_identify_anew(cache_home, monkeypatch):
    texts = [t for _, t in corpus()] + ["", "MIT License", "Licensed under the Apache License, Version 2.0 " * 20]
    for threshold in (0.75, 0.9):
        fresh = [plain_identify(t, threshold) for t in texts]
        assert any(ids == [] for ids in fresh) and any(len(ids) > 1 or "MIT" in ids for ids in fresh)
        cold = [match.identify(t, threshold) for t in texts]
        restart()
        monkeypatch.setattr(match, "examine", lambda *a: pytest.fail("matched again despite a stored answer"))
        warm = [match.identify(t, threshold) for t in texts]
        monkeypatch.undo()
        monkeypatch.setenv("CODEFOUNDRY_CACHE", str(cache_home))
        restart()
        assert cold == fresh and warm == fresh
    # an answer of identify is not a file's verdict of the same text
    mit = dict(corpus())["LICENSE"]
    assert cache.entry_name("identify", mit, 0.75) not in {cache.entry_name(k, mit, 0.75) for k in ("file", "notice")}


def test_reference_ids_without_reading_the_texts():
    assert match.reference_ids() == tuple(ref.spdx for ref in match.references())
    assert spdx.known_ids() == {ref.spdx.lower(): ref.spdx for ref in match.references()} | {
        "python-2.0": "Python-2.0"}


def test_doc_ids_of_known_unknown_and_explained_bigrams():
    index = match._gram_index()
    known = sorted(index.ids)[:50]
    doc = [*known, None, "never a bigram", "", "ünïcode wörds", None, *known[::-1]]
    expected = [-1 if g is None else index.ids.get(g, -1) for g in doc]
    assert index.doc_ids(doc).tolist() == expected and expected.count(-1) == 5
    assert index.doc_ids([]).tolist() == []


def test_a_worker_forked_before_any_lookup_writes_its_verdicts(cache_home):
    """The local executor's case: workers fork from a driver that judged nothing yet."""
    code = ("import multiprocessing\n"
            "from codefoundry.data.license.verdict import license_file_ids\n"
            "if __name__ == '__main__':\n"
            "    with multiprocessing.get_context('fork').Pool(2) as pool:\n"
            "        print(pool.starmap(license_file_ids, [('LICENSE', 'Licensed under the MIT License.'),\n"
            "                                              ('COPYING', 'Licensed under the Apache License 2.0.')]))\n"
            "        pool.close()\n"
            "        pool.join()\n"
            "    import os\n"
            "    os._exit(0)  # the driver writes nothing: it judged nothing\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(n for pack in packs(cache_home).values() for n in pack) == sorted(
        cache.entry_name("file", t, 0.75) for t in ("Licensed under the MIT License.",
                                                    "Licensed under the Apache License 2.0."))

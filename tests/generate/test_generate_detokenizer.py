"""Incremental detokenization: equal to a full decode, never a broken UTF-8 character, special tokens skipped."""

from __future__ import annotations

from pathlib import Path

from codefoundry.generate import IncrementalDetokenizer
from codefoundry.tokenizer import load_tokenizer

TEXT = 'print("héllo wörld — 日本語のテキスト 🎉🐍")  # naïve café\n    return "Ωmega"\n'


def stream(tokenizer, prompt_ids: list[int], ids: list[int]) -> tuple[list[str], str]:
    detok = IncrementalDetokenizer(tokenizer, prompt_ids)
    pieces = [detok.add(i) for i in ids]
    tail = detok.flush()
    return pieces, "".join(pieces) + tail


def test_multibyte_characters_split_across_tokens(tiny_tokenizer_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    prompt = tokenizer.encode("x = 1\n")
    ids = tokenizer.encode(TEXT)
    broken = [i for i in ids if "\ufffd" in tokenizer.decode([i])]
    assert len(broken) >= 4, "the test needs characters split over byte-level tokens"
    pieces, text = stream(tokenizer, prompt, ids)
    assert text == TEXT == tokenizer.decode(ids)
    assert all("\ufffd" not in p for p in pieces)
    assert pieces.count("") >= 2                     # held back while a character was incomplete


def test_special_tokens_are_skipped(tiny_tokenizer_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    ids = tokenizer.encode("<fim_prefix>def f():<fim_suffix>\n    return 1<fim_middle>  x = 'é'<|endoftext|>")
    assert {1, 2, 3, 0} <= set(ids)
    pieces, text = stream(tokenizer, [], ids)
    assert text == "def f():\n    return 1  x = 'é'" == tokenizer.decode(ids, skip_special_tokens=True)
    assert all("<fim" not in p and "\ufffd" not in p for p in pieces)

    keep = IncrementalDetokenizer(tokenizer, [], skip_special_tokens=False)
    assert "".join(keep.add(i) for i in ids) + keep.flush() == tokenizer.decode(ids)


def test_unfinished_character_is_flushed_as_replacement(tiny_tokenizer_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    ids = tokenizer.encode("ok 🐍")
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode("# "))
    emitted = "".join(detok.add(i) for i in ids[:-1])      # the snake's last byte never comes
    assert emitted == "ok " and "\ufffd" not in emitted
    tail = detok.flush()
    assert tail.startswith("\ufffd") and detok.text == "ok " + tail

"""The tokenizer trained on the curated tiny dataset: StarCoder's pipeline and ids, loadable by transformers."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from codefoundry.manifest import read_manifest
from codefoundry.tokenizer import SPECIAL_TOKENS, load_tokenizer


def test_special_tokens_have_starcoder_ids(tiny_tokenizer_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(19))
    assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.eos_token_id == 0


def test_special_tokens_in_prompt_text_are_single_ids(tiny_tokenizer_dir: Path) -> None:
    tok = load_tokenizer(tiny_tokenizer_dir)
    ids = tok("<fim_prefix>def f(x):<fim_suffix>\n    return y<fim_middle>", add_special_tokens=False).input_ids
    assert ids[0] == 1 and 3 in ids and ids[-1] == 2
    assert ids.count(1) == ids.count(2) == ids.count(3) == 1


def test_round_trip_digits_and_bytes(tiny_tokenizer_dir: Path) -> None:
    tok = load_tokenizer(tiny_tokenizer_dir)
    text = "x = 12345  # naïve café ∑ 🙂\n\tif x:\n        return 'ok'\n"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text
    digits = tok("90210", add_special_tokens=False).input_ids
    assert [tok.decode([i]) for i in digits] == list("90210")   # digits split one by one, as StarCoder


def test_files_and_manifest(tiny_tokenizer_dir: Path, tiny_dataset: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tiny_tokenizer_dir / name).is_file(), name
    spec = json.loads((tiny_tokenizer_dir / "tokenizer.json").read_text())
    kinds = [p["type"] for p in spec["pre_tokenizer"]["pretokenizers"]]
    assert kinds == ["Digits", "ByteLevel"] and spec["model"]["type"] == "BPE"
    manifest = read_manifest(tiny_tokenizer_dir, kind="tokenizer")
    assert manifest.inputs["dataset"].path == str(tiny_dataset.resolve())
    assert manifest.extra["vocab_size"] == len(load_tokenizer(tiny_tokenizer_dir)) == 2048
    langs = manifest.extra["bytes_by_language"]
    assert {"Python", "Go", "C"} <= set(langs), langs

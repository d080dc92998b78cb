"""`codefoundry tokenizer train` end to end, and the sampling of languages to a byte budget."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codefoundry.cli import run
from codefoundry.manifest import read_manifest, write_manifest
from codefoundry.tokenizer import load_tokenizer
from codefoundry.tokenizer.corpus import language_targets


def test_cli_trains_a_loadable_tokenizer(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "tok"
    assert run(["tokenizer", "train", str(tiny_dataset), "--out", str(out), "--vocab-size", "600"]) == 0
    tok = load_tokenizer(out)
    assert len(tok) == 600 and tok.convert_tokens_to_ids("<reponame>") == 18
    assert read_manifest(out).config["vocab_size"] == 600
    assert run(["tokenizer", "train", str(tiny_dataset), "--out", str(out)]) == 1
    assert "already holds a tokenizer" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--vocab-size", "100"], "vocab_size"),
    (["--byte-budget", "0"], "byte_budget"),
], ids=["vocab-too-small", "zero-budget"])
def test_cli_rejects_bad_settings(tiny_dataset: Path, tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    assert run(["tokenizer", "train", str(tiny_dataset), "--out", str(tmp_path / "t"), *argv]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err


def test_dataset_without_content_is_named(tmp_path: Path, capsys) -> None:
    (tmp_path / "ds" / "data" / "files").mkdir(parents=True)
    pq.write_table(pa.table({"text": ["x = 1"]}), tmp_path / "ds" / "data" / "files" / "0.parquet")
    assert run(["tokenizer", "train", str(tmp_path / "ds"), "--out", str(tmp_path / "t")]) == 1
    assert "no `content` column" in capsys.readouterr().err


def test_budget_samples_by_language(tmp_path: Path) -> None:
    """Two subsets, a big and a small language: the budget is met and alpha < 1 lifts the small one."""
    rows = {"files": [("Python", "def f():\n    return 1\n" * 20)] * 300,
            "tests": [("Go", "func f() int { return 1 }\n" * 20)] * 30}
    for subset, items in rows.items():
        (tmp_path / "ds" / "data" / subset).mkdir(parents=True)
        langs, texts = zip(*items, strict=True)
        pq.write_table(pa.table({"lang": list(langs), "content": list(texts), "size": [len(t) for t in texts]}),
                       tmp_path / "ds" / "data" / subset / "0.parquet")
    write_manifest(tmp_path / "ds", "dataset", {})
    totals = Counter({"Python": 300 * 440, "Go": 30 * 520})
    flat = language_targets(totals, 40_000, alpha=1.0)
    assert flat["Python"] == pytest.approx(flat["Go"])          # proportional
    lifted = language_targets(totals, 40_000, alpha=0.3)
    assert lifted["Go"] > 3 * lifted["Python"]
    assert language_targets(totals, 10**9, alpha=0.5) == {"Python": 1.0, "Go": 1.0}
    capped = language_targets(totals, 100_000, alpha=0.1)        # Go's share exceeds what it has
    assert capped["Go"] == 1.0 and sum(totals[k] * p for k, p in capped.items()) == pytest.approx(100_000)

    out = tmp_path / "tok"
    assert run(["tokenizer", "train", str(tmp_path / "ds"), "--out", str(out), "--vocab-size", "300",
                "--byte-budget", "40000", "--language-alpha", "0.3"]) == 0
    used = read_manifest(out).extra["bytes_by_language"]
    assert 25_000 < sum(used.values()) < 55_000 and used["Go"] > 0.25 * sum(used.values())

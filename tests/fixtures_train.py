"""Fixtures of the train stage: a small real-code dataset and a byte-level BPE tokenizer with
StarCoder's special tokens, built once per session (shared with tests that need trained models)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import STDLIB

STARCODER_SPECIALS = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<filename>",
                      "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>",
                      "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<empty_output>", "<commit_before>",
                      "<commit_msg>", "<commit_after>", "<reponame>"]

# Real code in 6 "repositories" of 3 stdlib modules each (two subsets: files and tests).
REPOS = {
    "acme/text": ["textwrap.py", "shlex.py", "string.py"],
    "acme/num": ["colorsys.py", "bisect.py", "fractions.py"],
    "acme/io": ["fnmatch.py", "glob.py", "genericpath.py"],
    "acme/fmt": ["pprint.py", "reprlib.py", "keyword.py"],
    "acme/misc": ["heapq.py", "operator.py", "numbers.py"],
    "acme/util": ["contextlib.py", "functools.py", "copy.py"],
}


def write_dataset(root: Path, repos: dict[str, list[str]] = REPOS) -> Path:
    """A dataset/ artifact (The Stack columns) of real stdlib code, with a manifest."""
    from codefoundry.manifest import write_manifest

    for subset in ("files", "tests"):
        rows = []
        for repo, names in repos.items():
            chosen = names if subset == "files" else names[:1]
            for name in chosen:
                text = (STDLIB / name).read_text(encoding="utf-8")
                if subset == "tests":
                    text = text[:3000]
                rows.append({"content": text, "lang": "Python", "repo_name": repo, "path": f"src/{name}",
                             "stars": 7, "licenses": ["MIT"], "size": len(text)})
        folder = root / "data" / subset
        folder.mkdir(parents=True, exist_ok=True)
        half = len(rows) // 2
        for i, part in enumerate((rows[:half], rows[half:])):
            pq.write_table(pa.Table.from_pylist(part), folder / f"part-{i:05d}.parquet")
    write_manifest(root, "dataset", {"source": "stdlib"}, seed=0)
    return root


def write_tokenizer(root: Path, vocab_size: int = 600) -> Path:
    """A byte-level BPE (StarCoder's pre-tokenizer and specials 0–18) trained on stdlib code."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from codefoundry.manifest import write_manifest

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=STARCODER_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [(STDLIB / n).read_text(encoding="utf-8") for names in REPOS.values() for n in names]
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<fim_pad>",
                                   additional_special_tokens=STARCODER_SPECIALS[1:])
    fast.save_pretrained(root)
    write_manifest(root, "tokenizer", {"vocab_size": vocab_size}, seed=0)
    return root


@pytest.fixture(scope="session")
def train_dataset_dir(build_once: Callable[[str, Callable[[Path], None]], Path]) -> Path:
    return build_once("train_dataset", write_dataset)


@pytest.fixture(scope="session")
def train_tokenizer_dir(build_once: Callable[[str, Callable[[Path], None]], Path]) -> Path:
    return build_once("train_tokenizer", write_tokenizer)

"""Fixtures of the model stage, shared by the generation, training, serving and eval tests.

- `tiny_tokenizer_dir`: a byte-level BPE tokenizer (StarCoder's special tokens at ids 0-18,
  vocab 2048) trained on `tiny_dataset`, the curated dataset of real code (Python, C, Go,
  JavaScript, Shell, Markdown).
- `tiny_model_dir`: a `tiny`-preset GPTBigCode (multi-query) saved in HF format with that
  tokenizer; random init with seed 0, float32.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

TINY_VOCAB = 2048
TINY_MODEL_SEED = 0

BuildOnce = Callable[[str, Callable[[Path], None]], Path]


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(build_once: BuildOnce, tiny_dataset: Path) -> Path:
    """A tokenizer/ artifact trained on tiny_dataset (vocab 2048)."""
    from codefoundry.tokenizer import TokenizerTrainConfig, train_tokenizer

    def build(out: Path) -> None:
        train_tokenizer(tiny_dataset, out, TokenizerTrainConfig(vocab_size=TINY_VOCAB))

    return build_once("tiny_tokenizer", build)


@pytest.fixture(scope="session")
def tiny_model_dir(build_once: BuildOnce, tiny_tokenizer_dir: Path) -> Path:
    """A model/ artifact: `tiny` preset, random init (seed 0), float32, with tiny_tokenizer_dir's files."""
    import torch

    from codefoundry.model import GPTBigCodeForCausalLM, preset, save_pretrained
    from codefoundry.tokenizer import load_tokenizer

    def build(out: Path) -> None:
        torch.manual_seed(TINY_MODEL_SEED)
        model = GPTBigCodeForCausalLM(preset("tiny", vocab_size=len(load_tokenizer(tiny_tokenizer_dir))))
        save_pretrained(model, out, tokenizer_dir=tiny_tokenizer_dir, seed=TINY_MODEL_SEED)

    return build_once("tiny_model", build)

"""Fixtures of the generation tests (shared: pytest_plugins in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

PEAKY_INIT = 0.2     # a wider init than GPT-2's 0.02, so an untrained model's greedy output is not one repeated token


@pytest.fixture(scope="session")
def peaky_model_dir(build_once: Callable[[str, Callable[[Path], None]], Path], tiny_tokenizer_dir: Path) -> Path:
    """A `tiny`-preset GPTBigCode (MQA) with initializer_range 0.2, saved in HF format with tiny_tokenizer_dir."""
    import torch

    from codefoundry.model import GPTBigCodeForCausalLM, preset, save_pretrained
    from codefoundry.tokenizer import load_tokenizer

    def build(out: Path) -> None:
        torch.manual_seed(0)
        vocab = len(load_tokenizer(tiny_tokenizer_dir))
        config = preset("tiny", vocab_size=vocab).replace(initializer_range=PEAKY_INIT)
        save_pretrained(GPTBigCodeForCausalLM(config), out, tokenizer_dir=tiny_tokenizer_dir, seed=0)

    return build_once("generate_peaky_model", build)


@pytest.fixture(scope="session")
def peaky_mha_model_dir(build_once: Callable[[str, Callable[[Path], None]], Path], tiny_tokenizer_dir: Path) -> Path:
    """As peaky_model_dir, with multi-head attention (kv_heads = n_head) instead of multi-query."""
    import torch

    from codefoundry.model import GPTBigCodeForCausalLM, preset, save_pretrained
    from codefoundry.tokenizer import load_tokenizer

    def build(out: Path) -> None:
        torch.manual_seed(1)
        vocab = len(load_tokenizer(tiny_tokenizer_dir))
        config = preset("tiny", vocab_size=vocab).replace(initializer_range=PEAKY_INIT, multi_query=False)
        save_pretrained(GPTBigCodeForCausalLM(config), out, tokenizer_dir=tiny_tokenizer_dir, seed=1)

    return build_once("generate_peaky_mha_model", build)

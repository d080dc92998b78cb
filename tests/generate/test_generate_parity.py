"""Greedy generation over the paged cache == transformers' GPTBigCodeForCausalLM.generate on the same checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codefoundry.generate import FinishReason, SamplingParams, generate
from codefoundry.model import load_model
from codefoundry.tokenizer import load_tokenizer

NEW_TOKENS = 64
PROMPTS = [
    "def fibonacci(n):\n",
    "import os\nimport sys\n\nclass Config:\n    def __init__(self, path):\n",
    "#include <stdio.h>\nint main(void) {",
    "package main\n\nfunc add(a, b int) int {",
    "<fim_prefix>def area(r):\n    <fim_suffix>\n    return a<fim_middle>",
    "const express = require('express');\nconst app = express();\n",
    "# Utilities\n\n## Install\n",
    "for i in range(10):\n    print(i",
]


def hf_greedy(model_dir: Path, prompt_ids: list[int], dtype: torch.dtype,
              new_tokens: int = NEW_TOKENS) -> tuple[list[int], list[float]]:
    """transformers' greedy tokens and, per step, the gap between its top-1 and top-2 logits."""
    hf = _hf_model(model_dir, dtype)
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                          max_new_tokens=new_tokens, min_new_tokens=0, do_sample=False, eos_token_id=None,
                          pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(prompt_ids):].tolist()
    gaps = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
    return tokens, gaps


_HF_CACHE: dict = {}


def _hf_model(model_dir: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    key = (str(model_dir), dtype)
    if key not in _HF_CACHE:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        model.generation_config.eos_token_id = None
        _HF_CACHE[key] = model.eval()
    return _HF_CACHE[key]


def agreeing_prefix(gaps: list[float], tol: float) -> int:
    """Steps to compare: up to (excluding) the first where transformers' top-1/top-2 gap < tol."""
    return next((i for i, gap in enumerate(gaps) if gap < tol), len(gaps))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_greedy_matches_transformers_alone_and_in_a_batch_of_8(peaky_model_dir: Path, dtype: torch.dtype) -> None:
    tokenizer = load_tokenizer(peaky_model_dir)
    model = load_model(peaky_model_dir, dtype=dtype)
    params = SamplingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True)
    prompt_ids = [tokenizer.encode(p) for p in PROMPTS]

    alone = generate(model, tokenizer, [prompt_ids[0]], params)[0]
    batch = generate(model, tokenizer, prompt_ids, params)
    compared = 0
    for i, ids in enumerate(prompt_ids):
        theirs, gaps = hf_greedy(peaky_model_dir, ids, dtype)
        assert len(theirs) == NEW_TOKENS
        n = NEW_TOKENS if dtype == torch.float64 else agreeing_prefix(gaps, 1e-3)
        assert batch[i].token_ids[:n] == theirs[:n], f"prompt {i} differs within the first {n} tokens"
        assert batch[i].generated_tokens == NEW_TOKENS and batch[i].finish_reason is FinishReason.LENGTH
        compared += n
        assert len(set(theirs)) > 3, "degenerate reference output"
        if i == 0:
            assert alone.token_ids[:n] == theirs[:n]
    assert compared >= (8 * NEW_TOKENS if dtype == torch.float64 else 4 * NEW_TOKENS)
    assert batch[0].token_ids == alone.token_ids


def test_long_prompt_in_chunks_gives_the_same_tokens(peaky_model_dir: Path) -> None:
    """A prompt prefilled in 16-token chunks beside other sequences == prefilled in one step (float64)."""
    tokenizer = load_tokenizer(peaky_model_dir)
    model = load_model(peaky_model_dir, dtype=torch.float64)
    long_prompt = "".join(PROMPTS[:4])
    ids = tokenizer.encode(long_prompt)
    assert len(ids) > 40
    params = SamplingParams(max_new_tokens=24, ignore_eos=True)
    whole = generate(model, tokenizer, [ids], params, max_batch_tokens=4096)[0]
    chunked = generate(model, tokenizer, [ids, PROMPTS[5], PROMPTS[6]], params, max_batch_tokens=16, block_size=8)
    assert chunked[0].token_ids == whole.token_ids
    for prompt, c in zip(PROMPTS[5:7], chunked[1:], strict=True):
        assert c.token_ids == generate(model, tokenizer, [prompt], params)[0].token_ids


def test_multi_head_attention_model_matches_transformers_in_a_batch(peaky_mha_model_dir: Path) -> None:
    """kv_heads = n_head through the same paged path (float64, exact tokens)."""
    tokenizer = load_tokenizer(peaky_mha_model_dir)
    model = load_model(peaky_mha_model_dir, dtype=torch.float64)
    assert model.config.num_kv_heads == model.config.n_head > 1
    prompt_ids = [tokenizer.encode(p) for p in PROMPTS[:4]]
    ours = generate(model, tokenizer, prompt_ids, SamplingParams(max_new_tokens=32, ignore_eos=True))
    for ids, c in zip(prompt_ids, ours, strict=True):
        theirs, _ = hf_greedy(peaky_mha_model_dir, ids, torch.float64, new_tokens=32)
        assert c.token_ids == theirs and len(set(theirs)) > 3

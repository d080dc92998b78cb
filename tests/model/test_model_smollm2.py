"""Real pretrained weights: SmolLM2-135M-Instruct from llama.cpp's GGUF (Q4_1), through import, generate, export.

The reference is transformers itself: `from_pretrained(dir, gguf_file=…)` dequantizes the
same file with its own code (slow: ~1 minute here), or opens our imported directory (fast).
Greedy tokens are compared up to the first step where transformers' top-1/top-2 logit gap is
below 1e-3 (a near-tie that float32 round-off may break either way), as tests/generate does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from codefoundry.generate import SamplingParams, generate
from codefoundry.model import export_gguf, import_gguf, load_model
from codefoundry.model.gguf_import import read_gguf, read_metadata
from codefoundry.tokenizer import load_tokenizer

PROMPTS = [
    "def fibonacci(n):\n",
    "import os\nimport sys\n\nclass Config:\n    def __init__(self, path):\n",
    "#include <stdio.h>\nint main(void) {",
    "// Sort an array of numbers in JavaScript\nfunction sort(",
    "# Utilities\n\n## Install\n",
    "for i in range(10):\n    print(i",
    "SELECT name, COUNT(*) FROM users",
]
NEAR_TIE = 1e-3


def chat_prompt(tokenizer) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": "Write a Python function that adds two "
                                           "numbers."}], tokenize=False, add_generation_prompt=True)


def hf_greedy(model, prompt_ids: list[int], new_tokens: int) -> tuple[list[int], list[float]]:
    """transformers' greedy tokens and, per step, the gap between its top-1 and top-2 logits."""
    with torch.no_grad():
        mask = torch.ones(1, len(prompt_ids), dtype=torch.long)
        out = model.generate(torch.tensor([prompt_ids]), attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=2,
                             output_scores=True, return_dict_in_generate=True)
    gaps = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
    return out.sequences[0, len(prompt_ids):].tolist(), gaps


def agreeing_prefix(gaps: list[float]) -> int:
    return next((i for i, gap in enumerate(gaps) if gap < NEAR_TIE), len(gaps))


def assert_same_greedy(ours: list[int], theirs: list[int], gaps: list[float], at_least: int) -> int:
    n = agreeing_prefix(gaps)
    assert ours[:n] == theirs[:n], f"differs within the first {n} tokens"
    assert n >= at_least, f"only {n} tokens before a near-tie"
    return n


def test_smollm2_imports_opens_in_transformers_and_generates_alike(smollm2_dir: Path) -> None:
    """The fast slice: the real GGUF imported, opened by transformers, 16 greedy tokens equal alone and in a batch."""
    config = transformers.AutoConfig.from_pretrained(smollm2_dir)
    assert config.model_type == "llama" and config.num_key_value_heads == 3 and config.tie_word_embeddings
    tokenizer, hf_tokenizer = load_tokenizer(smollm2_dir), transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    prompt = chat_prompt(tokenizer)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.encode(prompt) == hf_tokenizer.encode(prompt)
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("x = 2024"))[-4:] == ["2", "0", "2", "4"]  # digits split
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.bos_token == "<|im_start|>"

    ours = load_model(smollm2_dir)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    ids = [tokenizer.encode(p) for p in (prompt, PROMPTS[2])]
    params = SamplingParams(max_new_tokens=16, ignore_eos=True)
    batch = generate(ours, tokenizer, ids, params)
    alone = generate(ours, tokenizer, [ids[0]], params)[0]
    for i, (prompt_ids, completion) in enumerate(zip(ids, batch, strict=True)):
        expected, gaps = hf_greedy(theirs, prompt_ids, 16)
        assert_same_greedy(completion.token_ids, expected, gaps, at_least=6)
        if i == 0:
            assert_same_greedy(alone.token_ids, expected, gaps, at_least=6)
    assert "def" in tokenizer.decode(alone.token_ids)             # a real model: it answers the question with code


@pytest.fixture(scope="module")
def smollm2_from_gguf(smollm2_gguf: Path):
    """transformers' own reading of the GGUF file (its dequantization, its permutation), float32."""
    return transformers.AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name,
                                                             dtype=torch.float32).eval()


@pytest.mark.slow
def test_smollm2_logits_match_transformers_gguf_reader(smollm2_dir: Path, smollm2_from_gguf) -> None:
    tokenizer = load_tokenizer(smollm2_dir)
    ours = load_model(smollm2_dir)
    for text in (PROMPTS[1], chat_prompt(tokenizer)):
        ids = torch.tensor([tokenizer.encode(text)])
        with torch.no_grad():
            assert (ours(ids) - smollm2_from_gguf(ids).logits).abs().max().item() <= 1e-3


@pytest.mark.slow
def test_smollm2_64_greedy_tokens_alone_and_in_a_batch_of_8(smollm2_dir: Path, smollm2_from_gguf) -> None:
    tokenizer = load_tokenizer(smollm2_dir)
    ours = load_model(smollm2_dir)
    prompts = [*PROMPTS, chat_prompt(tokenizer)]
    ids = [tokenizer.encode(p) for p in prompts]
    params = SamplingParams(max_new_tokens=64, ignore_eos=True)
    batch = generate(ours, tokenizer, ids, params)
    compared = 0
    for i, (prompt_ids, completion) in enumerate(zip(ids, batch, strict=True)):
        expected, gaps = hf_greedy(smollm2_from_gguf, prompt_ids, 64)
        compared += assert_same_greedy(completion.token_ids, expected, gaps, at_least=1)
        if i in (0, 7):
            alone = generate(ours, tokenizer, [prompt_ids], params)[0]
            assert_same_greedy(alone.token_ids, expected, gaps, at_least=1)
    assert compared >= 4 * 64


@pytest.mark.slow
def test_smollm2_export_round_trip(tmp_path: Path, smollm2_dir: Path, smollm2_gguf: Path) -> None:
    """Our f16 GGUF imports back to the same weights (to f16 rounding) and carries the original's tokenizer."""
    file = export_gguf(smollm2_dir, tmp_path / "smollm2-f16.gguf", "f16")
    back = load_model(import_gguf(file, tmp_path / "back")).state_dict()
    for name, w in load_model(smollm2_dir).state_dict().items():
        assert torch.equal(back[name], w.half().float() if w.dim() > 1 else w), name
    ours = read_metadata(read_gguf(file))
    original = read_metadata(read_gguf(smollm2_gguf))
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.pre",
                "tokenizer.ggml.model", "tokenizer.chat_template", "llama.rope.freq_base", "llama.context_length",
                "llama.attention.head_count_kv", "llama.rope.dimension_count"):
        assert ours[key] == original[key], key

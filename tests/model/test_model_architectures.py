"""Llama and StarCoder2 equal transformers' own: logits through the paged forward, and greedy batches.

The models are random-initialised by transformers itself (`LlamaForCausalLM(config)`), saved
with `save_pretrained`, and read by `codefoundry.model.load_model`: one test covers the HF
names and layouts, RoPE (default, linear, llama3), GQA, tied and untied heads, biases and the
sliding window, through the same paged cache the engine uses.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import transformers

from codefoundry.errors import ArtifactError
from codefoundry.model import (
    LlamaConfig,
    LlamaForCausalLM,
    PagedAttention,
    Starcoder2Config,
    Starcoder2ForCausalLM,
    allocate_kv_cache,
    load_config,
    load_model,
    save_pretrained,
)

BLOCK = 4
SHAPE = dict(hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=256, initializer_range=0.2)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}
CASES = {
    # name: (transformers config class, its kwargs)
    "llama-gqa-untied": (transformers.LlamaConfig, dict(num_key_value_heads=2, tie_word_embeddings=False)),
    "llama-mqa-tied-linear": (transformers.LlamaConfig, dict(
        num_key_value_heads=1, tie_word_embeddings=True, rope_scaling={"rope_type": "linear", "factor": 4.0},
        rope_theta=500.0)),
    "llama-mha-llama3-bias": (transformers.LlamaConfig, dict(
        num_key_value_heads=4, rope_scaling=LLAMA3, attention_bias=True, mlp_bias=True)),
    "starcoder2-window": (transformers.Starcoder2Config, dict(num_key_value_heads=2, sliding_window=7)),
    "starcoder2-nobias": (transformers.Starcoder2Config, dict(num_key_value_heads=1, use_bias=False)),
}


def hf_model(tmp_path: Path, case: str, vocab: int = 300, seed: int = 0) -> Path:
    """A transformers-initialised model of `case`, norms and biases perturbed, saved in float64 to a directory."""
    cls, kwargs = CASES[case]
    torch.manual_seed(seed)
    config = cls(vocab_size=vocab, **SHAPE, **kwargs, bos_token_id=0, eos_token_id=0)
    model = transformers.AutoModelForCausalLM.from_config(config).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / case)
    return tmp_path / case


@pytest.mark.parametrize("case", list(CASES))
def test_paged_forward_matches_transformers_to_1e_9(tmp_path: Path, case: str) -> None:
    """Chunked prefill and decode steps of 4 sequences in flat batches == transformers' logits (float64)."""
    model_dir = hf_model(tmp_path, case)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
    ours = load_model(model_dir, dtype=torch.float64)
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.config.num_kv_heads == theirs.config.num_key_value_heads
    rng = random.Random(0)
    lengths = [37, 9, 21, 2]                                   # longer than the sliding window and the llama3 ramp
    seqs = [[rng.randrange(300) for _ in range(n)] for n in lengths]
    free = list(range(1, 64))
    rng.shuffle(free)                                         # non-contiguous, unordered blocks
    tables = [[free.pop() for _ in range(-(-n // BLOCK))] for n in lengths]
    width = max(map(len, tables))
    caches = allocate_kv_cache(ours.config, 64, BLOCK, dtype=torch.float64)
    done = [0] * len(seqs)
    got: list[list[torch.Tensor]] = [[] for _ in seqs]
    with torch.no_grad():
        while any(d < len(s) for d, s in zip(done, seqs, strict=True)):
            active = [i for i, s in enumerate(seqs) if done[i] < len(s)]
            chunks = [min(rng.choice([1, 1, 3, 8]), len(seqs[i]) - done[i]) for i in active]
            ids, positions, slots = [], [], []
            for i, n in zip(active, chunks, strict=True):
                for p in range(done[i], done[i] + n):
                    ids.append(seqs[i][p])
                    positions.append(p)
                    slots.append(tables[i][p // BLOCK] * BLOCK + p % BLOCK)
                done[i] += n
            attn = PagedAttention(chunks, [done[i] for i in active],
                                  torch.tensor([tables[i] + [0] * (width - len(tables[i])) for i in active]),
                                  torch.tensor(slots), torch.arange(len(ids)), BLOCK)
            logits = ours.forward_paged(torch.tensor(ids), torch.tensor(positions), attn, caches)
            for i, rows in zip(active, logits.split(chunks), strict=True):
                got[i].extend(rows)
        for seq, rows in zip(seqs, got, strict=True):
            expected = theirs(torch.tensor([seq])).logits[0]
            assert (torch.stack(rows) - expected).abs().max().item() <= 1e-9
            assert (ours(torch.tensor([seq]))[0] - expected).abs().max().item() <= 1e-9   # the training path too


def test_sliding_window_changes_the_logits(tmp_path: Path) -> None:
    """The window is really applied: the same weights without it give other logits past the window."""
    model_dir = hf_model(tmp_path, "starcoder2-window")
    windowed = load_model(model_dir, dtype=torch.float64)
    full = Starcoder2ForCausalLM(windowed.config.replace(sliding_window=None)).double().eval()
    full.load_state_dict(windowed.state_dict())
    ids = torch.randint(0, 300, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = windowed(ids)[0], full(ids)[0]
    assert (a[:7] - b[:7]).abs().max().item() <= 1e-12           # within the window: identical
    assert (a[7:] - b[7:]).abs().max().item() > 1e-3


@pytest.mark.parametrize("arch", ["llama", "starcoder2"])
def test_greedy_batch_of_8_matches_transformers(tmp_path: Path, tiny_tokenizer_dir: Path, arch: str) -> None:
    """codefoundry.generate on 8 prompts of mixed lengths == transformers' greedy, token for token (float64)."""
    from codefoundry.generate import SamplingParams, generate
    from codefoundry.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    torch.manual_seed(3)
    shape = dict(vocab_size=2048, **SHAPE, num_key_value_heads=2, bos_token_id=0, eos_token_id=0)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**shape, rope_scaling=LLAMA3))
    else:
        model = Starcoder2ForCausalLM(Starcoder2Config(**shape, sliding_window=24))
    save_pretrained(model.double(), tmp_path / arch, tokenizer_dir=tiny_tokenizer_dir)
    ours = load_model(tmp_path / arch, dtype=torch.float64)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / arch, dtype=torch.float64).eval()
    rng = random.Random(1)
    prompts = [[rng.randrange(19, 2048) for _ in range(n)] for n in (1, 5, 17, 3, 40, 9, 2, 26)]
    params = SamplingParams(max_new_tokens=32, ignore_eos=True)
    batch = generate(ours, tokenizer, prompts, params)
    alone = generate(ours, tokenizer, [prompts[4]], params)[0]
    for prompt, completion in zip(prompts, batch, strict=True):
        with torch.no_grad():
            out = theirs.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                  max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0)
        expected = out[0, len(prompt):].tolist()
        assert completion.token_ids == expected
        assert len(set(expected)) > 3, "degenerate reference output"
    assert alone.token_ids == batch[4].token_ids


def test_unsupported_model_type_names_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "mamba", "hidden_size": 8}')
    with pytest.raises(ArtifactError, match=r"model_type 'mamba' is not supported; .*gpt_bigcode, llama, starcoder2"):
        load_config(tmp_path)


def test_unsupported_rope_scaling_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama", "rope_scaling": {"type": "yarn", "factor": 2}}')
    with pytest.raises(ArtifactError, match=r"rope_scaling type 'yarn' is not supported; supported: default, linear"):
        load_config(tmp_path)


def test_transformers_5_rope_parameters_are_read(tmp_path: Path) -> None:
    """transformers 5 saves `rope_parameters` (theta inside); transformers 4 saved `rope_theta` + `rope_scaling`."""
    model_dir = hf_model(tmp_path, "llama-mha-llama3-bias")
    config = load_config(model_dir)
    assert config.rope_scaling is not None and config.rope_scaling["rope_type"] == "llama3"
    assert config.rope_scaling["factor"] == 8.0 and config.rope_theta == 10000.0
    legacy = tmp_path / "legacy"                             # the hub's many transformers-4 configs
    legacy.mkdir()
    (legacy / "config.json").write_text('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, '
                                        '"rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 4.0}, '
                                        '"eos_token_id": [128001, 128009]}')
    config = load_config(legacy)
    assert config.rope_scaling == {"rope_type": "linear", "factor": 4.0} and config.rope_theta == 500000.0
    assert config.eos_token_id == 128001


def test_untied_head_differs_and_round_trips(tmp_path: Path) -> None:
    model_dir = hf_model(tmp_path, "llama-gqa-untied")
    ours = load_model(model_dir, dtype=torch.float64)
    assert ours.lm_head.weight is not ours.model.embed_tokens.weight
    save_pretrained(ours, tmp_path / "again")
    back = load_model(tmp_path / "again", dtype=torch.float64)
    for (name, a), b in zip(ours.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    tied = load_model(hf_model(tmp_path, "llama-mqa-tied-linear"), dtype=torch.float64)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight


def test_training_loss_matches_transformers(tmp_path: Path) -> None:
    """The fused head+loss path of the RoPE models, against transformers' loss (float64)."""
    model_dir = hf_model(tmp_path, "starcoder2-window")
    ours = load_model(model_dir, dtype=torch.float64).train()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64)
    ids = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(2))
    loss = ours(ids[:, :-1], labels=ids[:, 1:])
    exact = torch.nn.functional.cross_entropy(theirs(ids).logits[:, :-1].reshape(-1, 300), ids[:, 1:].reshape(-1))
    assert abs(loss.item() - exact.item()) <= 1e-9
    loss.backward()
    assert ours.model.layers[0].self_attn.q_proj.weight.grad is not None

"""Fixtures of the LoRA serving tests: small base checkpoints of each architecture and PEFT adapters for them.

- `lora_bases`: name → model/ directory (GPTBigCode MQA and MHA, Llama GQA, StarCoder2), random
  init with a wide spread (so greedy output is not one repeated token), saved in float32 with
  `tiny_tokenizer_dir`'s files.
- `make_lora_adapter(base_dir, out, targets, seed)`: an adapter made by `peft` itself
  (`get_peft_model` on transformers' model of that checkpoint, `save_pretrained`), with random
  `lora_B` (peft starts it at zero, which would change nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

LORA_TARGETS = {                       # the StarCoder fine-tune's targets per architecture, and then some
    "gpt_bigcode-mqa": ["c_attn", "c_proj", "c_fc"],
    "gpt_bigcode-mha": ["c_attn", "c_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "starcoder2": ["q_proj", "v_proj", "c_fc"],
}
ROTARY_SHAPE = dict(hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=256, initializer_range=0.2, bos_token_id=0, eos_token_id=0)


@pytest.fixture(scope="session")
def lora_bases(build_once: Callable[[str, Callable[[Path], None]], Path], tiny_tokenizer_dir: Path) -> dict[str, Path]:
    import torch

    from codefoundry.model import (
        GPTBigCodeForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        Starcoder2Config,
        Starcoder2ForCausalLM,
        preset,
        save_pretrained,
    )
    from codefoundry.tokenizer import load_tokenizer

    vocab = len(load_tokenizer(tiny_tokenizer_dir))
    makers = {
        "gpt_bigcode-mqa": lambda: GPTBigCodeForCausalLM(
            preset("tiny", vocab_size=vocab).replace(initializer_range=0.2)),
        "gpt_bigcode-mha": lambda: GPTBigCodeForCausalLM(
            preset("tiny", vocab_size=vocab).replace(initializer_range=0.2, multi_query=False)),
        "llama": lambda: LlamaForCausalLM(LlamaConfig(vocab_size=vocab, num_key_value_heads=2, **ROTARY_SHAPE)),
        "starcoder2": lambda: Starcoder2ForCausalLM(Starcoder2Config(vocab_size=vocab, num_key_value_heads=2,
                                                                     **ROTARY_SHAPE)),
    }

    def builder(make: Callable) -> Callable[[Path], None]:
        def build(out: Path) -> None:
            torch.manual_seed(0)
            save_pretrained(make(), out, tokenizer_dir=tiny_tokenizer_dir, seed=0)
        return build

    return {name: build_once(f"lora_base_{name}", builder(make)) for name, make in makers.items()}


def make_lora_adapter(base_dir: Path, out: Path, targets: Sequence[str], seed: int, r: int = 4,
                      alpha: float = 8.0, b_std: float = 0.3, **lora_kwargs: object) -> Path:
    """A PEFT LoRA adapter of `base_dir` written by peft's own `save_pretrained`, with nonzero lora_B."""
    import peft
    import torch
    import transformers

    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0,
                             task_type="CAUSAL_LM", **lora_kwargs)
    model = peft.get_peft_model(base, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * (b_std if "lora_B" in name else 0.3))
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lora_adapters(build_once: Callable[[str, Callable[[Path], None]], Path],
                  lora_bases: dict[str, Path]) -> dict[str, dict[str, Path]]:
    """Two adapters per base architecture: `a` (rank 4) and `b` (rank 8, rsLoRA), different targets."""
    out: dict[str, dict[str, Path]] = {}
    for arch, base in lora_bases.items():
        targets = LORA_TARGETS[arch]
        out[arch] = {
            "a": build_once(f"lora_adapter_{arch}_a", lambda p, b=base, t=targets: make_lora_adapter(b, p, t, seed=1)),
            "b": build_once(f"lora_adapter_{arch}_b", lambda p, b=base, t=targets: make_lora_adapter(
                b, p, t[:2], seed=2, r=8, alpha=16.0, use_rslora=True)),
        }
    return out

"""codefoundry.model: GPTBigCode (StarCoder's architecture), its paged KV cache, HF-format checkpoints.

    from codefoundry.model import preset, GPTBigCodeForCausalLM, save_pretrained, load_model
    model = GPTBigCodeForCausalLM(preset("tiny", vocab_size=len(tokenizer)))
    logits = model(input_ids)                                   # training path, [B, T, V]
    logits = model.forward_paged(ids, positions, attn, caches)  # generation path (see model.paged)
    save_pretrained(model, "model/", tokenizer_dir="tokenizer/")  # opens in transformers
"""

from codefoundry.model.checkpoint import load_config, load_model, save_pretrained
from codefoundry.model.config import PRESETS, GPTBigCodeConfig, padded_vocab_size, preset
from codefoundry.model.gpt_bigcode import GPTBigCodeForCausalLM
from codefoundry.model.paged import PagedAttention, allocate_kv_cache, kv_cache_bytes_per_block

__all__ = [
    "PRESETS",
    "GPTBigCodeConfig",
    "GPTBigCodeForCausalLM",
    "PagedAttention",
    "allocate_kv_cache",
    "kv_cache_bytes_per_block",
    "load_config",
    "load_model",
    "padded_vocab_size",
    "preset",
    "save_pretrained",
]

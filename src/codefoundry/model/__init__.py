"""codefoundry.model: GPTBigCode, Llama and StarCoder2 decoders, their paged KV cache, HF and GGUF checkpoints.

    from codefoundry.model import preset, GPTBigCodeForCausalLM, save_pretrained, load_model
    model = GPTBigCodeForCausalLM(preset("tiny", vocab_size=len(tokenizer)))
    logits = model(input_ids)                                   # training path, [B, T, V]
    logits = model.forward_paged(ids, positions, attn, caches)  # generation path (see model.paged)
    save_pretrained(model, "model/", tokenizer_dir="tokenizer/")  # opens in transformers
    model = load_model("smollm2/")                              # config.json's model_type picks the class
    model = load_model("SmolLM2-135M-Instruct.Q4_1.gguf")       # a GGUF file, imported once (cached)
    model = load_model("model/", quantize="int4")                # weight-only int8/int4 linears (model.quantize)
    import_gguf("model.gguf", "model/"); export_gguf("model/", "model.gguf", "q8_0")
"""

from codefoundry.model.checkpoint import ARCHITECTURES, model_class, save_pretrained
from codefoundry.model.config import PRESETS, GPTBigCodeConfig, padded_vocab_size, preset
from codefoundry.model.gguf_export import EXPORT_TYPES, export_gguf
from codefoundry.model.gguf_import import import_gguf
from codefoundry.model.gpt_bigcode import GPTBigCodeForCausalLM
from codefoundry.model.info import model_info
from codefoundry.model.llama import LlamaConfig, LlamaForCausalLM
from codefoundry.model.load import load_config, load_model, native_quantize, resolve_model_path
from codefoundry.model.paged import PagedAttention, allocate_kv_cache, kv_cache_bytes_per_block
from codefoundry.model.quantize import QUANTIZE_MODES, QuantizedLinear, quantize_model, weight_bytes
from codefoundry.model.starcoder2 import Starcoder2Config, Starcoder2ForCausalLM

__all__ = [
    "ARCHITECTURES",
    "EXPORT_TYPES",
    "PRESETS",
    "QUANTIZE_MODES",
    "GPTBigCodeConfig",
    "GPTBigCodeForCausalLM",
    "LlamaConfig",
    "LlamaForCausalLM",
    "PagedAttention",
    "QuantizedLinear",
    "Starcoder2Config",
    "Starcoder2ForCausalLM",
    "allocate_kv_cache",
    "export_gguf",
    "import_gguf",
    "kv_cache_bytes_per_block",
    "load_config",
    "load_model",
    "model_class",
    "model_info",
    "native_quantize",
    "padded_vocab_size",
    "preset",
    "quantize_model",
    "resolve_model_path",
    "save_pretrained",
    "weight_bytes",
]

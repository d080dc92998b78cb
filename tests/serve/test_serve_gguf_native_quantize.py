"""A Q4_0 / Q4_1 GGUF file is served in its own 4-bit precision by default, as llama.cpp serves it.

`--quantize int4` reads such a file's 4-bit values and block scales exactly (and is faster than
float32 on CPU); a llama.cpp user expects that without a flag. `--quantize none` still serves the
dequantized float weights, and /info says which is in force.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import torch

from codefoundry.generate import SamplingParams, generate
from codefoundry.model import (
    LlamaConfig,
    LlamaForCausalLM,
    export_gguf,
    load_model,
    native_quantize,
    resolve_model_path,
    save_pretrained,
)
from codefoundry.model.quantize import QuantizedLinear
from codefoundry.tokenizer import load_tokenizer

SHAPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=128, bos_token_id=0, eos_token_id=0, initializer_range=0.1)
PROMPT = "def add(a, b):\n    return a + b\n"
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("gguf_native")
    vocab = len(load_tokenizer(tiny_tokenizer_dir))
    torch.manual_seed(0)
    save_pretrained(LlamaForCausalLM(LlamaConfig(vocab_size=vocab, **SHAPE)), tmp / "model",
                    tokenizer_dir=tiny_tokenizer_dir)
    return {"dir": tmp / "model", **{t: export_gguf(tmp / "model", tmp / f"model-{t}.gguf", t)
                                     for t in ("q4_0", "q4_1", "q8_0")}}


def test_native_quantize_of_each_file_type(files: dict[str, Path], gguf_cache: Path) -> None:
    assert native_quantize(files["q4_0"]) == native_quantize(files["q4_1"]) == "int4"
    assert native_quantize(files["q8_0"]) is None        # served as float (a Q8_0 block is not our int8 layout)
    assert native_quantize(files["dir"]) is None


def _greedy_text(model, tokenizer) -> str:
    return generate(model, tokenizer, [PROMPT], SamplingParams(max_new_tokens=NEW_TOKENS))[0].text


def test_q4_file_is_served_in_int4_by_default_and_in_float_with_none(files: dict[str, Path],
                                                                     gguf_cache: Path) -> None:
    from codefoundry.serve import ServeConfig, start_in_thread
    from codefoundry.serve.engine_builder import build_engine

    file = files["q4_0"]
    tokenizer = load_tokenizer(resolve_model_path(file))
    running = start_in_thread(ServeConfig(model=file, port=0, max_batch_total_tokens=512,
                                          max_batch_prefill_tokens=128, engine_process=False))
    try:
        info = httpx.get(running.url + "/info", timeout=30).json()
        served = httpx.post(running.url + "/generate", timeout=60, json={
            "inputs": PROMPT, "parameters": {"max_new_tokens": NEW_TOKENS}})
    finally:
        running.stop()
    assert info["quantize"] == "int4" and info["model_dtype"] == "float32"
    assert served.status_code == 200, served.text
    # exactly what the file's own 4-bit weights compute (not the dequantized float model's output)
    assert served.json()["generated_text"] == _greedy_text(load_model(file, quantize="int4"), tokenizer)

    engine, engine_info = build_engine(ServeConfig(model=file, max_batch_total_tokens=512,
                                                   max_batch_prefill_tokens=128))
    assert engine_info.quantize == "int4"
    assert any(isinstance(m, QuantizedLinear) and m.mode == "int4" for m in engine.model.modules())
    engine, engine_info = build_engine(ServeConfig(model=file, quantize="none", max_batch_total_tokens=512,
                                                   max_batch_prefill_tokens=128))
    assert engine_info.quantize is None
    assert not any(isinstance(m, QuantizedLinear) for m in engine.model.modules())
    engine, engine_info = build_engine(ServeConfig(model=files["dir"], max_batch_total_tokens=512,
                                                   max_batch_prefill_tokens=128))
    assert engine_info.quantize is None        # a float model directory stays float by default

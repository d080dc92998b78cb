"""A Q4_0 / Q4_1 GGUF file served with `--quantize int4` keeps the file's own 4-bit values and block scales.

The file is written by `export_gguf` (gguf's own Q4 quantizer); the reference is the same file
dequantized to float32 (`load_model(FILE)`, what transformers reads too).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from codefoundry.generate import SamplingParams, generate
from codefoundry.model import (
    LlamaConfig,
    LlamaForCausalLM,
    export_gguf,
    load_model,
    resolve_model_path,
    save_pretrained,
)
from codefoundry.model.gguf_import import q4_blocks, read_gguf
from codefoundry.model.quantize import QuantizedLinear, _unpack_int4
from codefoundry.tokenizer import load_tokenizer

SHAPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=128, bos_token_id=0, eos_token_id=0, initializer_range=0.1)
PROMPT = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("gguf_q4")
    vocab = len(load_tokenizer(tiny_tokenizer_dir))
    torch.manual_seed(0)
    save_pretrained(LlamaForCausalLM(LlamaConfig(vocab_size=vocab, **SHAPE)), tmp / "model",
                    tokenizer_dir=tiny_tokenizer_dir)
    return {t: export_gguf(tmp / "model", tmp / f"model-{t}.gguf", t) for t in ("q4_0", "q4_1")}


@pytest.mark.parametrize("qtype", ["q4_0", "q4_1"])
def test_int4_layers_hold_the_files_own_values(files: dict[str, Path], qtype: str, gguf_cache: Path) -> None:
    file = files[qtype]
    tensors = {t.name: t for t in read_gguf(file).tensors}
    assert tensors["blk.0.ffn_down.weight"].tensor_type.name == qtype.upper()
    model = load_model(file, quantize="int4")
    mlp = model.model.layers[0].mlp
    for layer, parts in ((mlp.gate_up_proj, ["blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"]),
                         (mlp.down_proj, ["blk.0.ffn_down.weight"])):
        assert isinstance(layer, QuantizedLinear) and layer.mode == "int4"
        q_file = torch.cat([q4_blocks(tensors[p])[0] for p in parts])
        q_ours = _unpack_int4(layer.qweight, layer.out_features, layer.in_features)
        assert torch.equal(q_ours.to(torch.int32), q_file.to(torch.int32))         # bit for bit, no requantizing
    # q/k rows are in HF's order (llama.cpp permutes them): the layer's weight is the imported fp32 weight
    reference = load_model(file)
    attn, ref_attn = model.model.layers[1].self_attn, reference.model.layers[1].self_attn
    want = torch.cat([ref_attn.q_proj.weight, ref_attn.k_proj.weight, ref_attn.v_proj.weight])
    got = attn.qkv_proj.dequantized(torch.float32)
    # equal but for the block scales' rounding to the kernels' bfloat16 (8 bits of mantissa against float16's 11)
    assert float((got - want).abs().max()) <= 2 ** -8 * float(want.abs().max())


@pytest.mark.parametrize("qtype", ["q4_0", "q4_1"])
def test_int4_gguf_logits_match_the_dequantized_model(files: dict[str, Path], qtype: str, gguf_cache: Path) -> None:
    file = files[qtype]
    ids = torch.tensor([load_tokenizer(resolve_model_path(file)).encode(PROMPT)])
    with torch.no_grad():
        ours, reference = load_model(file, quantize="int4")(ids)[0], load_model(file)(ids)[0]
    # the weights are the same numbers; what differs is bfloat16 activations and the int8 output projection
    assert float((ours - reference).abs().max()) < 0.05 * float(reference.abs().max())
    agree = (ours.argmax(-1) == reference.argmax(-1)).float().mean()
    assert agree >= 0.9


def test_serve_gguf_q4_in_its_own_precision(files: dict[str, Path], gguf_cache: Path) -> None:
    import httpx

    from codefoundry.serve import ServeConfig, start_in_thread

    file = files["q4_1"]
    running = start_in_thread(ServeConfig(model=file, port=0, quantize="int4", max_batch_total_tokens=2048,
                                          max_batch_prefill_tokens=256))
    try:
        r = httpx.post(f"{running.url}/generate", timeout=60, json={
            "inputs": PROMPT, "parameters": {"max_new_tokens": 10, "details": True}})
        info = httpx.get(f"{running.url}/info", timeout=10).json()
    finally:
        running.stop()
    assert r.status_code == 200, r.text
    tokens = [t["id"] for t in r.json()["details"]["tokens"]]
    expected = generate(load_model(file, quantize="int4"), load_tokenizer(resolve_model_path(file)), [PROMPT],
                        SamplingParams(max_new_tokens=10))[0]
    assert tokens == expected.token_ids and len(tokens) >= 1
    assert json.dumps(info)                      # the server answered its info route with the quantized model

"""`load_model(..., quantize=)` quantizes layer by layer while reading: the same model as quantizing the
loaded float model, without ever holding the float weights whole (peak RSS measured in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codefoundry.errors import ArtifactError
from codefoundry.model import (
    GPTBigCodeForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Starcoder2Config,
    Starcoder2ForCausalLM,
    export_gguf,
    load_model,
    preset,
    quantize_model,
    resolve_model_path,
    save_pretrained,
)
from codefoundry.model.checkpoint import read_model
from codefoundry.model.gguf_import import q4_linear_weights
from codefoundry.tokenizer import load_tokenizer

ROPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=128, bos_token_id=0, eos_token_id=0, initializer_range=0.1)


def _models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "llama-untied": LlamaForCausalLM(LlamaConfig(vocab_size=320, tie_word_embeddings=False, **ROPE)),
        "starcoder2-tied": Starcoder2ForCausalLM(Starcoder2Config(vocab_size=320, sliding_window=8, **ROPE)),
        "gpt_bigcode": GPTBigCodeForCausalLM(preset("tiny", vocab_size=320)),
    }


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("quantize_load")
    out = {}
    for name, model in _models().items():
        save_pretrained(model, tmp / name, tokenizer_dir=tiny_tokenizer_dir)
        out[name] = tmp / name
    return out


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items()}


def _assert_same_model(got: torch.nn.Module, want: torch.nn.Module) -> None:
    assert str(got) == str(want)                                   # the same module tree, layer modes, shapes
    a, b = _state(got), _state(want)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    ids = torch.tensor([[1, 5, 9, 2, 7, 3]])
    with torch.inference_mode():
        assert torch.equal(got(ids), want(ids))


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("name", ["llama-untied", "starcoder2-tied", "gpt_bigcode"])
def test_layer_by_layer_load_equals_quantizing_the_loaded_model(model_dirs: dict[str, Path], name: str,
                                                                mode: str) -> None:
    want = quantize_model(read_model(model_dirs[name]), mode)
    got = load_model(model_dirs[name], quantize=mode)
    _assert_same_model(got, want)
    if name == "starcoder2-tied":                                  # the tie survives: one int8 table
        assert got.model.embed_tokens.head[0] is got.lm_head


@pytest.mark.parametrize("qtype", ["q4_0", "q4_1"])
def test_layer_by_layer_load_of_a_gguf_q4_file_equals_the_old_path(tmp_path: Path, tiny_tokenizer_dir: Path,
                                                                   gguf_cache: Path, qtype: str) -> None:
    torch.manual_seed(0)
    vocab = len(load_tokenizer(tiny_tokenizer_dir))                # GGUF export wants the tokenizer's size
    save_pretrained(LlamaForCausalLM(LlamaConfig(vocab_size=vocab, **ROPE)), tmp_path / "m",
                    tokenizer_dir=tiny_tokenizer_dir)
    file = export_gguf(tmp_path / "m", tmp_path / f"m-{qtype}.gguf", qtype)
    want = quantize_model(read_model(resolve_model_path(file)), "int4", int4_weights=dict(q4_linear_weights(file)))
    _assert_same_model(load_model(file, quantize="int4"), want)


def test_a_checkpoint_that_does_not_match_its_config_is_refused_before_quantizing(model_dirs: dict[str, Path],
                                                                                  tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in model_dirs["llama-untied"].iterdir():
        if f.is_file():
            (bad / f.name).write_bytes(f.read_bytes())
    config = json.loads((bad / "config.json").read_text())
    config["intermediate_size"] = 128
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="has shape"):
        load_model(bad, quantize="int8")
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])               # truncated
    config["intermediate_size"] = 96
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError):
        load_model(bad, quantize="int8")


PEAK = r"""
import json, resource, sys
import torch
from codefoundry.model import load_model, quantize_model
from codefoundry.model.checkpoint import read_model
path, how = sys.argv[1], sys.argv[2]
quantize_model(torch.nn.Sequential(torch.nn.Linear(64, 64)), "int8")     # kernels and allocator warmed up first
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = load_model(path, quantize="int8") if how == "layer by layer" else quantize_model(read_model(path), "int8")
print(json.dumps({"load_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base}))
"""


def _peak_kib(path: Path, how: str) -> int:
    done = subprocess.run([sys.executable, "-c", PEAK, str(path), how], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["load_kib"]


def test_peak_memory_of_a_quantized_load_stays_below_the_float_weights(tmp_path: Path) -> None:
    """A model of 71 MB in float32 (8 layers of 9 MB): quantizing while reading never holds them all."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=320, hidden_size=512, intermediate_size=768, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=128,
                         bos_token_id=0, eos_token_id=0)
    save_pretrained(LlamaForCausalLM(config), tmp_path / "m")
    float_kib = (tmp_path / "m" / "model.safetensors").stat().st_size // 1024
    whole = _peak_kib(tmp_path / "m", "whole model first")
    by_layer = _peak_kib(tmp_path / "m", "layer by layer")
    # the float model read whole, then quantized, peaks near its float size (measured: 94%); layer by
    # layer: one float layer at a time plus the int8 result (about a quarter of the float size)
    assert by_layer < 0.5 * float_kib, f"peak {by_layer} KiB loading {float_kib} KiB of float32 (whole: {whole})"

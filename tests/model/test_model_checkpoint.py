"""HF-format model directories: files, manifest lineage, loading, presets, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from codefoundry.errors import ArtifactError
from codefoundry.manifest import lineage, read_manifest
from codefoundry.model import GPTBigCodeConfig, GPTBigCodeForCausalLM, load_model, padded_vocab_size, preset
from codefoundry.tokenizer import load_tokenizer


def test_tiny_model_dir_is_a_complete_hf_checkpoint(tiny_model_dir: Path, tiny_tokenizer_dir: Path) -> None:
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json", "manifest.json"} <= names
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "gpt_bigcode" and config["architectures"] == ["GPTBigCodeForCausalLM"]
    assert config["vocab_size"] == padded_vocab_size(len(load_tokenizer(tiny_tokenizer_dir))) == 2048
    kinds = [kind for _, _, kind in ((r, p, m.kind) for r, p, m in lineage(tiny_model_dir))]
    assert kinds[:3] == ["model", "tokenizer", "dataset"]
    assert read_manifest(tiny_model_dir).inputs["tokenizer"].path == str(tiny_tokenizer_dir.resolve())
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert tok.convert_tokens_to_ids("<fim_middle>") == 2


def test_tiny_model_dir_loads_here_and_in_transformers(tiny_model_dir: Path) -> None:
    ours = load_model(tiny_model_dir)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = load_tokenizer(tiny_model_dir)("def add(a, b):\n    return a + b\n", return_tensors="pt").input_ids
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max().item() <= 1e-4
    assert not ours.training and ours.transformer.wte.weight.dtype == torch.float32


def test_presets_match_released_shapes() -> None:
    with torch.device("meta"):
        santa = GPTBigCodeForCausalLM(preset("santacoder-1b", vocab_size=49280))
        star = GPTBigCodeForCausalLM(preset("starcoder-15b", vocab_size=49152))
        base = GPTBigCodeForCausalLM(preset("125m", vocab_size=49152))
    assert 110e6 < base.num_parameters() < 112e6 and base.transformer.h[0].attn.c_attn.weight.shape == (896, 768)
    assert santa.transformer.h[0].attn.c_attn.weight.shape == (2304, 2048)
    assert star.transformer.h[0].attn.c_attn.weight.shape == (6400, 6144)
    assert 1.05e9 < santa.num_parameters() < 1.2e9
    assert 15.4e9 < star.num_parameters() < 15.6e9
    assert star.num_parameters() == star.config.num_parameters()
    assert preset("long", 1000).n_positions == 8192 and preset("tiny", 1000).vocab_size == 1024


def test_bad_model_dirs_name_the_problem(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no config\.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**GPTBigCodeConfig().to_hf_dict(), "n_layer": 3}))
    with pytest.raises(ArtifactError, match=r"no model\.safetensors"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes())
    with pytest.raises(ArtifactError, match=r"does not match its config\.json|has shape"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(ArtifactError, match=r"model_type 'mamba' is not supported; codefoundry\.model reads "
                                            "gpt_bigcode, llama, starcoder2"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                                      "num_attention_heads": 4}))
    with pytest.raises(ArtifactError, match=r"does not match its config\.json"):   # a GPTBigCode's weights
        load_model(tmp_path)

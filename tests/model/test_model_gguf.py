"""GGUF in and out on small models of all three architectures: round trips, transformers' reader, bad files, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import transformers

from codefoundry.cli import run
from codefoundry.errors import ArtifactError, UserError
from codefoundry.model import (
    GPTBigCodeForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Starcoder2Config,
    Starcoder2ForCausalLM,
    export_gguf,
    import_gguf,
    load_model,
    model_info,
    preset,
    resolve_model_path,
    save_pretrained,
)
from codefoundry.model.gguf_import import dequantize, read_gguf
from codefoundry.tokenizer import load_tokenizer

SHAPE = dict(vocab_size=2048, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=0,
             initializer_range=0.1)
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
CODE = "def add(a, b):\n    return a + b  # 2024 <fim_prefix>x<fim_suffix>\n\tprint('ünï')\n"


def _model(arch: str, window: int | None = 6, scaled: bool = True):
    torch.manual_seed(0)
    if arch == "llama":
        scaling = {"rope_type": "linear", "factor": 2.0} if scaled else None
        return LlamaForCausalLM(LlamaConfig(**SHAPE, rope_scaling=scaling))
    if arch == "starcoder2":
        return Starcoder2ForCausalLM(Starcoder2Config(**SHAPE, sliding_window=window))
    config = preset("tiny", vocab_size=2048).replace(multi_query=arch == "gpt_bigcode-mqa")
    return GPTBigCodeForCausalLM(config)


def _saved(tmp_path: Path, arch: str, tokenizer_dir: Path, **kwargs) -> Path:
    out = tmp_path / arch
    save_pretrained(_model(arch, **kwargs), out, tokenizer_dir=tokenizer_dir)
    config = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHAT_TEMPLATE}))
    return out


ARCHS = ["llama", "starcoder2", "gpt_bigcode-mqa", "gpt_bigcode-mha"]


@pytest.mark.parametrize("arch", ARCHS)
def test_export_then_import_gives_the_same_model(tmp_path: Path, tiny_tokenizer_dir: Path, arch: str) -> None:
    """f16: every weight equals the original rounded to f16; q8_0: within Q8_0's error; tokenizer identical."""
    src = _saved(tmp_path, arch, tiny_tokenizer_dir)
    original = load_model(src).state_dict()
    for weight_type, check in (("f16", "exact"), ("q8_0", 0.01)):
        file = export_gguf(src, tmp_path / f"{arch}-{weight_type}.gguf", weight_type)
        back_dir = import_gguf(file, tmp_path / f"{arch}-{weight_type}")
        back = load_model(back_dir)
        assert type(back).__name__ == type(load_model(src)).__name__
        assert back.config.to_hf_dict() | {"initializer_range": 0} == \
            load_model(src).config.to_hf_dict() | {"initializer_range": 0}
        state = back.state_dict()
        assert state.keys() == original.keys()
        for name, w in original.items():
            if check == "exact":
                assert torch.equal(state[name], w.half().float() if w.dim() > 1 else w), name
            else:
                assert (state[name] - w).abs().max().item() <= check * w.abs().max().item() + 1e-6, name
    ours, theirs = load_tokenizer(src), load_tokenizer(tmp_path / f"{arch}-f16")
    assert theirs.encode(CODE) == ours.encode(CODE)
    assert len(theirs) == len(ours) and theirs.all_special_tokens == ours.all_special_tokens
    assert theirs.eos_token_id == ours.eos_token_id and theirs.chat_template == CHAT_TEMPLATE


def test_plain_byte_level_tokenizer_exports_under_llama_cpps_name(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    """GPT-2's split rule is `tokenizer.ggml.pre = "gpt-2"` in llama.cpp ("gpt2" makes it refuse the file);
    both spellings import back to the same tokenizer."""
    import gguf

    tok_dir = tmp_path / "bytelevel-tokenizer"
    shutil.copytree(tiny_tokenizer_dir, tok_dir)
    data = json.loads((tok_dir / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    (tok_dir / "tokenizer.json").write_text(json.dumps(data))
    src = _saved(tmp_path, "llama", tok_dir)
    file = export_gguf(src, tmp_path / "bytelevel.gguf")
    field = gguf.GGUFReader(file).fields["tokenizer.ggml.pre"]
    assert bytes(field.parts[field.data[0]]).decode() == "gpt-2"
    back = load_tokenizer(import_gguf(file, tmp_path / "back"))
    assert back.encode(CODE) == load_tokenizer(src).encode(CODE)


@pytest.mark.parametrize("arch", ["llama", "starcoder2"])
def test_transformers_reads_our_gguf_as_we_do(tmp_path: Path, tiny_tokenizer_dir: Path, arch: str) -> None:
    """An independent reader of our export (transformers' GGUF loader) computes the same logits as our import.

    transformers reads neither rope scaling nor a sliding window from GGUF, so the models here have none.
    """
    src = _saved(tmp_path, arch, tiny_tokenizer_dir, **({"window": None} if arch == "starcoder2" else
                                                       {"scaled": False}))
    file = export_gguf(src, tmp_path / "out" / "m.gguf")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name,
                                                               dtype=torch.float32).eval()
    ours = load_model(import_gguf(file, tmp_path / "back"))
    ids = torch.randint(0, 2048, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max().item() <= 1e-4


def test_llama_q_and_k_are_permuted_for_llama_cpp(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    """llama.cpp's layout differs from HF's in q/k rows only; the import undoes it."""
    src = _saved(tmp_path, "llama", tiny_tokenizer_dir)
    file = export_gguf(src, tmp_path / "m.gguf")
    stored = {t.name: dequantize(t) for t in read_gguf(file).tensors}
    hf = load_model(src).state_dict()
    q, k = hf["model.layers.0.self_attn.q_proj.weight"], hf["model.layers.0.self_attn.k_proj.weight"]
    assert not torch.equal(stored["blk.0.attn_q.weight"], q.half().float())
    assert not torch.equal(stored["blk.0.attn_k.weight"], k.half().float())
    assert torch.equal(stored["blk.0.attn_v.weight"], hf["model.layers.0.self_attn.v_proj.weight"].half().float())
    # llama.cpp's converter (convert_hf_to_gguf.py LlamaModel.permute), written out independently here
    hd = 64 // 4
    expect = q.reshape(4, 2, hd // 2, 64).swapaxes(1, 2).reshape(64, 64)
    assert torch.equal(stored["blk.0.attn_q.weight"], expect.half().float())


@pytest.mark.parametrize("qtype,tol", [("F16", 1e-3), ("BF16", 1e-2), ("Q8_0", 0.02), ("Q4_0", 0.35),
                                       ("Q4_1", 0.25), ("Q5_0", 0.15), ("Q5_1", 0.1)])
def test_dequantize_each_type(tmp_path: Path, qtype: str, tol: float) -> None:
    """A tensor written in each type reads back in [out, in] order within that type's rounding."""
    t = gguf.GGMLQuantizationType[qtype]
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    data = x.astype(np.float16) if qtype == "F16" else gguf.quants.quantize(x, t)
    _write(tmp_path / "q.gguf", "llama", {"t": (data, None if qtype == "F16" else t)})
    (tensor,) = read_gguf(tmp_path / "q.gguf").tensors
    got = dequantize(tensor)
    assert got.shape == (3, 64) and got.dtype == torch.float32
    assert (got - torch.from_numpy(x)).abs().max().item() <= tol * np.abs(x).max()


def _write(path: Path, arch: str, tensors: dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType | None]]) -> None:
    """A GGUF file of `arch` with `tensors` (name → (data, raw type)) and a block count of 1."""
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(1)
    for name, (data, raw) in tensors.items():
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _write_gguf(path: Path, arch: str) -> None:
    _write(path, arch, {"token_embd.weight": (np.zeros((8, 4), dtype=np.float32), None)})


def test_bad_files_are_clear_errors(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    (tmp_path / "text.gguf").write_text("hello")
    with pytest.raises(ArtifactError, match=r"is not a GGUF file \(it starts with b'hell'"):
        import_gguf(tmp_path / "text.gguf", tmp_path / "a")
    _write_gguf(tmp_path / "mamba.gguf", "mamba")
    with pytest.raises(ArtifactError, match="architecture 'mamba' is not supported; supported: llama, starcoder, "
                                            "starcoder2"):
        import_gguf(tmp_path / "mamba.gguf", tmp_path / "b")
    _write_gguf(tmp_path / "bare.gguf", "llama")
    with pytest.raises(ArtifactError, match=r"has no llama\.attention\.head_count"):
        import_gguf(tmp_path / "bare.gguf", tmp_path / "c")
    file = export_gguf(_saved(tmp_path, "llama", tiny_tokenizer_dir), tmp_path / "m.gguf")
    whole = file.read_bytes()
    for cut in (len(whole) // 2, len(whole) - 100, 200):
        (tmp_path / "cut.gguf").write_bytes(whole[:cut])
        with pytest.raises(ArtifactError, match=r"cut\.gguf"):
            import_gguf(tmp_path / "cut.gguf", tmp_path / "d")
    assert not any(p.name in ("a", "b", "c", "d") for p in tmp_path.iterdir())   # nothing half-written
    with pytest.raises(UserError, match="--type 'q4_k' is not one of f16, q8_0"):
        export_gguf(tmp_path / "llama", tmp_path / "x.gguf", "q4_k")
    with pytest.raises(UserError, match="already exists"):
        export_gguf(tmp_path / "llama", file)


def test_gguf_path_loads_like_a_model_dir(tmp_path: Path, tiny_tokenizer_dir: Path, gguf_cache: Path) -> None:
    """load_model / model_info take a .gguf file (load_tokenizer its resolved directory); the import happens once
    and is reused."""
    from codefoundry.generate import SamplingParams, generate

    src = _saved(tmp_path, "gpt_bigcode-mqa", tiny_tokenizer_dir)
    file = export_gguf(src, tmp_path / "small.gguf")
    model, tokenizer = load_model(file), load_tokenizer(resolve_model_path(file))
    reference = load_model(import_gguf(file, tmp_path / "imported"))
    params = SamplingParams(max_new_tokens=12, ignore_eos=True)
    assert generate(model, tokenizer, ["def f(x):"], params)[0].token_ids == \
        generate(reference, tokenizer, ["def f(x):"], params)[0].token_ids
    cached = [p for p in (gguf_cache / "gguf").iterdir() if p.is_dir() and p.name.startswith("small-")]
    assert len(cached) == 1
    stamp = (cached[0] / "model.safetensors").stat().st_mtime_ns
    load_model(file)
    assert (cached[0] / "model.safetensors").stat().st_mtime_ns == stamp
    info = model_info(file)
    assert info["format"] == "gguf" and info["architecture"] == "gpt_bigcode" and info["gguf_architecture"] == \
        "starcoder"
    assert info["parameters"] == model.num_parameters() and info["context"] == 512
    assert info["dtype"]["f16"] > 0 and info["dtype"]["f32"] > 0


def test_serve_answers_from_a_gguf_file(tmp_path: Path, tiny_tokenizer_dir: Path, gguf_cache: Path) -> None:
    """`serve --model FILE.gguf`: the real server, greedy tokens equal to generating from the imported directory."""
    import httpx

    from codefoundry.generate import SamplingParams, generate
    from codefoundry.serve import ServeConfig, start_in_thread

    file = export_gguf(_saved(tmp_path, "llama", tiny_tokenizer_dir), tmp_path / "served.gguf")
    running = start_in_thread(ServeConfig(model=file, port=0, max_batch_total_tokens=2048,
                                          max_batch_prefill_tokens=256))
    try:
        r = httpx.post(f"{running.url}/generate", json={"inputs": "def f(x):", "parameters": {
            "max_new_tokens": 10, "details": True}}, timeout=60)
    finally:
        running.stop()
    assert r.status_code == 200, r.text
    tokens = [t["id"] for t in r.json()["details"]["tokens"]]
    model = load_model(import_gguf(file, tmp_path / "imported"))
    tokenizer = load_tokenizer(resolve_model_path(file))
    expected = generate(model, tokenizer, ["def f(x):"], SamplingParams(max_new_tokens=10))[0]
    assert tokens == expected.token_ids[:len(tokens)] and len(tokens) >= 1


def test_cli_import_export_info(tmp_path: Path, tiny_tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _saved(tmp_path, "starcoder2", tiny_tokenizer_dir)
    out = str(tmp_path / "m.gguf")
    assert run(["model", "export", str(src), "--format", "gguf", "--type", "q8_0", "--out", out]) == 0
    assert run(["model", "import", str(tmp_path / "m.gguf"), "--out", str(tmp_path / "back")]) == 0
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").config.sliding_window == 6
    capsys.readouterr()
    assert run(["model", "info", str(tmp_path / "back"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "starcoder2" and info["kv_heads"] == 2 and info["context"] == 128
    assert info["imported_from"]["gguf"] == str((tmp_path / "m.gguf").resolve())
    assert info["imported_from"]["tensor_types"]["Q8_0"] > 0
    assert run(["model", "info", str(tmp_path / "m.gguf")]) == 0
    out = capsys.readouterr().out
    assert "starcoder2 (GGUF starcoder2)" in out and "q8_0" in out
    assert run(["model", "export", str(src), "--format", "onnx", "--out", str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err.strip() == "error: --format 'onnx' is not supported; supported: gguf"


def test_cli_bad_gguf_is_one_error_line(tmp_path: Path) -> None:
    """The installed command, in its own process: one `error:` line, no traceback, nothing written."""
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    r = subprocess.run([sys.executable, "-m", "codefoundry", "model", "import", str(tmp_path / "bad.gguf"), "--out",
                        str(tmp_path / "bad")], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "bad.gguf is not a valid GGUF file" in lines[0]
    assert not (tmp_path / "bad").exists()


def test_eval_runs_on_a_gguf_file(tmp_path: Path, tiny_tokenizer_dir: Path, gguf_cache: Path) -> None:
    """`eval --model FILE.gguf`: the same completions as from the directory the file imports to."""
    from codefoundry.eval import EvalConfig, run_eval

    file = export_gguf(_saved(tmp_path, "llama", tiny_tokenizer_dir), tmp_path / "evaluated.gguf")
    completions = []
    for model, out in ((file, "from-gguf"), (import_gguf(file, tmp_path / "imported"), "from-dir")):
        run_eval(tmp_path / out, EvalConfig(tasks=["humaneval"], model=model, limit=2, max_new_tokens=8,
                                            temperature=0, workers=1))
        rows = [json.loads(line) for line in (tmp_path / out / "samples.jsonl").read_text().splitlines()]
        assert len(rows) == 2
        completions.append([r["completion"] for r in rows])
    assert completions[0] == completions[1]

"""Weight-only int8/int4 quantization: the packed kernels agree with the dequantized weights, quality stays
within bounds on a trained model, all three architectures generate, and `codefoundry serve --quantize` serves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
from torch import nn

from codefoundry.generate import SamplingParams, generate
from codefoundry.model import (
    GPTBigCodeForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    QuantizedLinear,
    Starcoder2Config,
    Starcoder2ForCausalLM,
    load_model,
    preset,
    quantize_model,
    save_pretrained,
    weight_bytes,
)
from codefoundry.model.quantize import QuantizedEmbedding, _pack_int4, _unpack_int4, from_gguf_q4, perplexity
from fixtures_serve import wait_until_healthy

STDLIB = Path(os.__file__).parent
TRAIN_FILES = ["argparse.py", "textwrap.py", "shutil.py", "functools.py", "difflib.py", "csv.py", "tempfile.py"]
HELD_OUT = "heapq.py"                    # validation text: code the model never saw


@pytest.mark.parametrize("shape", [(96, 64), (320, 256), (192, 576), (16, 32)])
def test_int4_packing_round_trips_and_kernels_agree_with_the_dequantized_weight(shape: tuple[int, int]) -> None:
    n, k = shape
    torch.manual_seed(0)
    q = torch.randint(0, 16, (n, k), dtype=torch.int32)
    assert torch.equal(_unpack_int4(_pack_int4(q), n, k).to(torch.int32), q)      # 96: a 64-block and a 32-tail
    linear = nn.Linear(k, n)
    for mode in ("int8", "int4"):
        layer = QuantizedLinear(linear, mode)
        assert layer.packed, f"{mode}: PyTorch's packed CPU kernel is missing or disagrees"
        x = torch.randn(3, k)
        packed = layer(x)                                        # 3 rows: the packed kernel
        dense = nn.functional.linear(x.bfloat16(), layer.dequantized(torch.bfloat16)).float() + linear.bias
        torch.testing.assert_close(packed.detach(), dense.detach(), rtol=0.02, atol=0.02 * float(dense.abs().max()))
        ref = linear(x)
        err = float((packed - ref).abs().max() / ref.abs().max())
        assert err < (0.02 if mode == "int8" else 0.12), f"{mode}: relative error {err:.3f}"


def test_gguf_q4_blocks_become_int4_exactly() -> None:
    torch.manual_seed(0)
    n, k = 64, 64
    d, m = torch.rand(n, k // 32) / 10, -torch.rand(n, k // 32)
    q = torch.randint(0, 16, (n, k))
    q41 = (d.repeat_interleave(32, 1) * q + m.repeat_interleave(32, 1))          # GGUF Q4_1: w = d·q + m
    q40 = d.repeat_interleave(32, 1) * (q - 8)                                   # GGUF Q4_0: w = d·(q - 8)
    for weight, mins in ((q41, m), (q40, None)):
        layer = QuantizedLinear(nn.Linear(k, n, bias=False), "int4", compute_dtype=torch.float32)
        qi, sz = from_gguf_q4(d, q, mins)
        layer.qweight, layer.scale_zeros = _pack_int4(qi), sz
        torch.testing.assert_close(layer.weight, weight, rtol=0, atol=1e-6)


def _trained_tiny(tokenizer_dir: Path, out: Path) -> Path:
    """The tiny GPTBigCode preset trained for 60 steps on standard-library code (~20 s on a loaded core)."""
    from codefoundry.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    ids = torch.tensor(tok.encode("".join((STDLIB / f).read_text() for f in TRAIN_FILES)))
    torch.manual_seed(0)
    model = GPTBigCodeForCausalLM(preset("tiny", vocab_size=len(tok)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        starts = torch.randint(0, len(ids) - 129, (8,), generator=gen)
        batch = torch.stack([ids[s:s + 129] for s in starts.tolist()])
        loss = model(batch[:, :-1], labels=batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_pretrained(model, out, tokenizer_dir=tokenizer_dir, seed=0)
    return out


@pytest.fixture(scope="module")
def trained_tiny_dir(build_once, tiny_tokenizer_dir: Path) -> Path:
    return build_once("quantize_trained_tiny", lambda out: _trained_tiny(tiny_tokenizer_dir, out))


def test_perplexity_change_is_within_bounds_on_a_trained_model(trained_tiny_dir: Path) -> None:
    from codefoundry.tokenizer import load_tokenizer

    held_out = load_tokenizer(trained_tiny_dir).encode((STDLIB / HELD_OUT).read_text())[:4096]
    torch.set_num_threads(1)
    fp = load_model(trained_tiny_dir)
    base = perplexity(fp, held_out)
    assert base < 1500, f"the model did not learn anything (perplexity {base:.0f} of a 2048 vocabulary)"
    for mode, bound in (("int8", 0.01), ("int4", 0.05)):
        q = load_model(trained_tiny_dir, quantize=mode)
        assert isinstance(q.transformer.h[0].mlp.c_fc, QuantizedLinear) and q.transformer.h[0].mlp.c_fc.mode == mode
        assert isinstance(q.transformer.wte, QuantizedEmbedding)                       # the tie survives: one table
        assert weight_bytes(q) < weight_bytes(fp) * (0.4 if mode == "int8" else 0.35)
        ppl = perplexity(q, held_out)
        change = ppl / base - 1
        assert abs(change) < bound, f"{mode}: perplexity {base:.3f} → {ppl:.3f} ({change:+.2%})"
        assert ppl != base                                                             # it really is quantized


def _rotary(kind: str, out: Path) -> Path:
    torch.manual_seed(0)
    shape = dict(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.05)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=True))     # SmolLM2's tied head
    else:
        model = Starcoder2ForCausalLM(Starcoder2Config(**shape, sliding_window=8))
    save_pretrained(model, out)
    return out


@pytest.mark.parametrize("kind", ["gpt_bigcode", "llama", "starcoder2"])
def test_every_architecture_generates_quantized_close_to_full_precision(kind: str, tmp_path: Path,
                                                                        tiny_model_dir: Path) -> None:
    from codefoundry.tokenizer import load_tokenizer

    model_dir = tiny_model_dir if kind == "gpt_bigcode" else _rotary(kind, tmp_path / kind)
    tok = load_tokenizer(tiny_model_dir)
    prompts = [tok.encode("def add(a, b):\n    return"), tok.encode("#include <stdio.h>\nint main(void) {")]
    fp = load_model(model_dir)
    x = torch.tensor([prompts[0]])
    ref = fp(x)
    for mode in ("int8", "int4"):
        q = quantize_model(load_model(model_dir), mode)
        assert not any(isinstance(m, nn.Linear) for m in q.modules())           # every one quantized
        if kind != "gpt_bigcode":                                                # q/k/v stacked: one kernel call
            assert isinstance(q.model.layers[0].self_attn.qkv_proj, QuantizedLinear)
        logits = q(x)
        err = float((logits - ref).norm() / ref.norm())
        assert 0 < err < (0.03 if mode == "int8" else 0.2), f"{mode}: logits off by {err:.3f} (relative norm)"
        # the engine's paged path gives the training path's greedy tokens, alone and batched
        out = generate(q, tok, prompts, SamplingParams(max_new_tokens=8, ignore_eos=True))
        alone = generate(q, tok, prompts[:1], SamplingParams(max_new_tokens=8, ignore_eos=True))
        assert out[0].token_ids == alone[0].token_ids and len(out[1].token_ids) == 8
        ids = list(prompts[0])
        for _ in range(3):                                                 # greedy through the training forward
            ids.append(int(q(torch.tensor([ids]))[0, -1, :len(tok)].argmax()))
        assert out[0].token_ids[:3] == ids[len(prompts[0]):]


def test_serve_quantize_flag_serves_and_rejects_a_bad_mode(tiny_model_dir: Path, tmp_path: Path) -> None:
    import socket

    from codefoundry.config import load_config
    from codefoundry.errors import UserError
    from codefoundry.serve import ServeConfig

    with pytest.raises(UserError, match="'int8', 'int4' or 'none'"):   # what the CLI prints as its one error line
        load_config(ServeConfig, None, {"model": tiny_model_dir, "quantize": "int3"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    cli = [sys.executable, "-m", "codefoundry", "serve", "--model", str(tiny_model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--quantize", "int8", "--max-batch-total-tokens", "2048",
           "--max-batch-prefill-tokens", "256"]
    with open(log, "w") as f:
        proc = subprocess.Popen(cli, stdout=f, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(proc, url, log, timeout=300)
        r = httpx.post(url + "/generate", json={"inputs": "def add(a, b):",
                                                "parameters": {"max_new_tokens": 5, "details": True}}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["details"]["generated_tokens"] == 5
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:             # a loaded machine: do not leave it behind
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_smollm2_perplexity_change_is_within_bounds(smollm2_dir: Path) -> None:
    from codefoundry.tokenizer import load_tokenizer

    held_out = load_tokenizer(smollm2_dir).encode((STDLIB / HELD_OUT).read_text())[:2048]
    base = perplexity(load_model(smollm2_dir), held_out)
    for mode, bound in (("int8", 0.01), ("int4", 0.05)):
        change = perplexity(load_model(smollm2_dir, quantize=mode), held_out) / base - 1
        assert abs(change) < bound, f"{mode}: perplexity change {change:+.2%} from {base:.3f}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_quantized_model_generates_on_cuda(tiny_model_dir: Path) -> None:
    """On CUDA the layers take the dequantize path (no packed CPU kernel): the CPU kernels' logits, and it generates."""
    from codefoundry.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    ids = tok.encode("def add(a, b):\n    return")
    for mode in ("int8", "int4"):
        gpu = load_model(tiny_model_dir, device="cuda", quantize=mode)
        assert not any(m.packed for m in gpu.modules() if isinstance(m, QuantizedLinear))
        cpu = load_model(tiny_model_dir, quantize=mode)
        on_gpu, on_cpu = gpu(torch.tensor([ids], device="cuda")).cpu(), cpu(torch.tensor([ids]))
        assert float((on_gpu - on_cpu).norm() / on_cpu.norm()) < 0.02
        out = generate(gpu, tok, [ids], SamplingParams(max_new_tokens=8, ignore_eos=True))
        assert len(out[0].token_ids) == 8

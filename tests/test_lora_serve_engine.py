"""LoRA in the generation engine: peft's logits to float64 round-off, adapters and base mixed in one batch.

Adapters are made by `peft` itself (tests/fixtures_lora_serve.py); transformers + `peft.PeftModel`
on the same checkpoint is the reference. Float64 logits agree to 1e-9; float32 greedy tokens
agree up to the first step where the reference's top two logits nearly tie.
"""

from __future__ import annotations

from pathlib import Path

import peft
import pytest
import torch
import transformers

from codefoundry.errors import ArtifactError
from codefoundry.generate import Engine, SamplingParams, ScheduledSequence, ValidationError, generate
from codefoundry.generate.adapters import AdapterError
from codefoundry.model import load_model
from codefoundry.tokenizer import load_tokenizer
from fixtures_lora_serve import LORA_TARGETS, make_lora_adapter

ARCHS = ["gpt_bigcode-mqa", "gpt_bigcode-mha", "llama", "starcoder2"]
PROMPTS = ["def fibonacci(n):\n", "import os\nimport sys\n\nclass Config:\n", "#include <stdio.h>\nint main(void) {",
           "for i in range(10):\n    print(i", "package main\n\nfunc add(a, b int) int {",
           "# Utilities\n\n## Install\n"]


def _peft_logits(base_dir: Path, adapter_dir: Path | None, ids: list[int], dtype: torch.dtype) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    if adapter_dir is not None:
        model = peft.PeftModel.from_pretrained(model, adapter_dir)
    with torch.no_grad():
        return model.eval()(torch.tensor([ids])).logits[0]


def _engine(base_dir: Path, dtype: torch.dtype, adapters: dict[str, Path], device: str = "cpu") -> Engine:
    engine = Engine(load_model(base_dir, dtype=dtype, device=device), load_tokenizer(base_dir), num_blocks=64,
                    block_size=4)
    for name, path in adapters.items():
        engine.add_adapter(name, str(path))
    return engine


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("arch", ARCHS)
def test_float64_logits_equal_peft_for_two_adapters_and_base_in_one_forward(
        arch: str, device: str, lora_bases: dict[str, Path], lora_adapters: dict[str, dict[str, Path]]) -> None:
    base, adapters = lora_bases[arch], lora_adapters[arch]
    tok = load_tokenizer(base)
    ids = [tok.encode(p) for p in PROMPTS[:3]]
    engine = _engine(base, torch.float64, adapters, device)
    keys = [engine.lora.key("a"), None, engine.lora.key("b")]
    # one step: three sequences (adapter a, base, adapter b), every prompt token's logits, blocks disjoint
    seqs, first = [], 0
    for seq_ids, key in zip(ids, keys, strict=True):
        blocks = list(range(first, first + -(-len(seq_ids) // 4)))
        first += len(blocks)
        seqs.append(ScheduledSequence(seq_ids, 0, len(seq_ids), blocks, all_logits=True, adapter_id=key))
    ours = [t.cpu() for t in engine.runner.execute(seqs).all]
    for seq_ids, name, got in zip(ids, ["a", None, "b"], ours, strict=True):
        want = _peft_logits(base, adapters[name] if name else None, seq_ids, torch.float64)
        assert (got - want).abs().max().item() <= 1e-9, name
    # the adapters do change the model (else the comparison above could not fail)
    plain = _peft_logits(base, None, ids[0], torch.float64)
    assert (ours[0] - plain).abs().max().item() > 1e-2


def _greedy_gaps(base: Path, adapter: Path, ids: list[int], n: int) -> tuple[list[int], list[float]]:
    model = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    tokens, gaps = [], []
    with torch.no_grad():
        seq = list(ids)
        for _ in range(n):
            logits = model(torch.tensor([seq])).logits[0, -1]
            top = logits.topk(2).values
            gaps.append(float(top[0] - top[1]))
            tokens.append(int(logits.argmax()))
            seq.append(tokens[-1])
    return tokens, gaps


@pytest.mark.parametrize("arch", ["gpt_bigcode-mqa", "llama"])
def test_float32_greedy_tokens_equal_peft_up_to_a_near_tie(
        arch: str, lora_bases: dict[str, Path], lora_adapters: dict[str, dict[str, Path]]) -> None:
    base, adapter = lora_bases[arch], lora_adapters[arch]["a"]
    tok = load_tokenizer(base)
    prompt = tok.encode(PROMPTS[0])
    [ours] = generate(load_model(base), tok, [prompt], SamplingParams(max_new_tokens=16, ignore_eos=True,
                                                                       adapter_id="a"), adapters={"a": adapter})
    want, gaps = _greedy_gaps(base, adapter, prompt, 16)
    agree = next((i for i, g in enumerate(gaps) if g < 1e-4), len(gaps))
    assert agree >= 4 and ours.token_ids[:agree] == want[:agree]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_a_batch_mixing_two_adapters_and_the_base_gives_each_request_its_tokens_alone(
        dtype: torch.dtype, lora_bases: dict[str, Path], lora_adapters: dict[str, dict[str, Path]]) -> None:
    base, adapters = lora_bases["gpt_bigcode-mqa"], lora_adapters["gpt_bigcode-mqa"]
    model, tok = load_model(base, dtype=dtype), load_tokenizer(base)
    names = ["a", None, "b", "a", "b", None]
    params = [SamplingParams(max_new_tokens=24, ignore_eos=True, adapter_id=n) for n in names]
    # small step budget: prompts prefill in chunks beside other requests' decodes, adapters mixed in each step
    batched = generate(model, tok, PROMPTS, params, adapters=adapters, max_batch_tokens=24)
    alone = [generate(model, tok, [p], [sp], adapters=adapters)[0] for p, sp in zip(PROMPTS, params, strict=True)]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    base_only = generate(model, tok, PROMPTS, SamplingParams(max_new_tokens=24, ignore_eos=True))
    for i, name in enumerate(names):   # adapter requests differ from the base; base requests are the base's
        assert (batched[i].token_ids == base_only[i].token_ids) == (name is None), i
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())   # base model again


def test_prefix_cache_is_per_adapter(lora_bases: dict[str, Path], lora_adapters: dict[str, dict[str, Path]]) -> None:
    base, adapters = lora_bases["llama"], lora_adapters["llama"]
    engine = _engine(base, torch.float32, adapters)
    tok = load_tokenizer(base)
    prompt = tok.encode(PROMPTS[1] * 2)

    def run(name: str | None) -> list[int]:
        rid = object()
        engine.add_request(rid, prompt, SamplingParams(max_new_tokens=8, ignore_eos=True, adapter_id=name))
        while engine.has_unfinished():
            for out in engine.step().outputs:
                if out.completion is not None:
                    return out.completion.token_ids
        raise AssertionError("no completion")

    first_a = run("a")
    hits = engine.stats().prefix_cache_hits
    assert run("b") != first_a and engine.stats().prefix_cache_hits == hits      # b finds nothing of a's blocks
    assert run("a") == first_a and engine.stats().prefix_cache_hits > hits       # a finds its own
    # unloaded and reloaded from other files under the same name: a's old blocks are not reused
    engine.remove_adapter("a")
    engine.add_adapter("a", str(adapters["b"]))
    hits = engine.stats().prefix_cache_hits
    assert run("a") == run("b")
    assert engine.stats().prefix_cache_hits > hits


def test_adapter_load_errors_are_clear(tmp_path: Path, lora_bases: dict[str, Path],
                                       lora_adapters: dict[str, dict[str, Path]]) -> None:
    engine = _engine(lora_bases["gpt_bigcode-mqa"], torch.float32, {})
    with pytest.raises(ArtifactError, match="not a PEFT adapter"):
        engine.add_adapter("x", str(tmp_path))
    with pytest.raises(ArtifactError, match="does not exist"):
        engine.add_adapter("x", str(tmp_path / "missing"))
    with pytest.raises(ArtifactError, match=r"targets model\.layers\.0\.\w+\.\w+_proj, which this model does not have"):
        engine.add_adapter("x", str(lora_adapters["llama"]["a"]))
    with pytest.raises(AdapterError, match="not valid"):
        engine.add_adapter("../x", str(lora_adapters["gpt_bigcode-mqa"]["a"]))
    engine.add_adapter("x", str(lora_adapters["gpt_bigcode-mqa"]["a"]))
    with pytest.raises(AdapterError, match="already loaded"):
        engine.add_adapter("x", str(lora_adapters["gpt_bigcode-mqa"]["b"]))
    with pytest.raises(ValidationError, match="'y' is not loaded; loaded adapters: x"):
        engine.add_request(1, [1, 2, 3], SamplingParams(adapter_id="y"))
    engine.add_request(1, [1, 2, 3], SamplingParams(adapter_id="x"))
    with pytest.raises(AdapterError, match="in use by 1 request"):
        engine.remove_adapter("x")
    engine.abort(1)
    assert engine.remove_adapter("x")["name"] == "x" and engine.adapters() == []
    dora = make_lora_adapter(lora_bases["gpt_bigcode-mqa"], tmp_path / "dora", LORA_TARGETS["gpt_bigcode-mha"],
                             seed=3, use_dora=True)
    with pytest.raises(ArtifactError, match="DoRA"):
        engine.add_adapter("d", str(dora))

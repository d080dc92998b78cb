"""LoRA adapters on a weight-only quantized base: the quantized layer's output plus the adapter's delta.

Quantized Llama/StarCoder2 layers stack q/k/v_proj into one `qkv_proj` (gate/up_proj into
`gate_up_proj`); an adapter that targets the original names must still reach the right rows.
The references here are independent of `model.lora`'s stacking: plain forward hooks that add
`scaling * x @ A.T @ B.T`, read straight from the adapter's safetensors, to each part's rows.
Adapters are made by `peft` itself (tests/fixtures_lora_serve.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from codefoundry.generate import SamplingParams, generate
from codefoundry.generate.adapters import AdapterRegistry
from codefoundry.model import load_model
from codefoundry.model.quantize import QuantizedLinear
from codefoundry.tokenizer import load_tokenizer

PROMPT = "def fibonacci(n):\n    if n < 2:\n        return n\n"


def _manual_deltas(model: nn.Module, adapter_dir: Path) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks adding the adapter's delta by hand, module by module (fused parts sliced by their rows)."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    updates: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    for key, a in tensors.items():
        if ".lora_A." in key:
            name = key.removeprefix("base_model.model.").split(".lora_A.")[0]
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            r = a.shape[0]
            scale = config["lora_alpha"] / (math.sqrt(r) if config.get("use_rslora") else r)
            updates[name] = (a.float(), b.float(), scale)
    modules = dict(model.named_modules())
    by_target: dict[str, list[tuple[int, int, str]]] = {}
    for name in updates:
        if name in modules:
            by_target.setdefault(name, []).append((0, modules[name].out_features, name))
            continue
        parent, _, leaf = name.rpartition(".")
        for fused in ("qkv_proj", "gate_up_proj"):
            layer = modules.get(f"{parent}.{fused}")
            if layer is None:
                continue
            offset = 0
            for part, rows in layer.fused_parts:
                if part == leaf:
                    by_target.setdefault(f"{parent}.{fused}", []).append((offset, rows, name))
                offset += rows
    assert sum(len(v) for v in by_target.values()) == len(updates)      # every update found its rows

    def hook(parts: list[tuple[int, int, str]]):
        def add(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            out = output.clone()
            for offset, rows, name in parts:
                a, b, scale = updates[name]
                out[..., offset:offset + rows] += scale * (inputs[0] @ a.T) @ b.T
            return out
        return add

    return [modules[t].register_forward_hook(hook(parts)) for t, parts in by_target.items()]


@torch.no_grad()
def _logits(model: nn.Module, ids: list[int], registry: AdapterRegistry | None = None,
            key: str | None = None) -> torch.Tensor:
    x = torch.tensor([ids])
    if registry is None:
        return model(x)[0].float()
    with registry.step([key], [len(ids)]):
        return model(x)[0].float()


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("arch", ["llama", "starcoder2", "gpt_bigcode-mqa"])
def test_adapter_on_quantized_base_is_the_quantized_output_plus_the_delta(
        arch: str, mode: str, lora_bases: dict[str, Path], lora_adapters: dict[str, dict[str, Path]]) -> None:
    base = lora_bases[arch]
    ids = load_tokenizer(base).encode(PROMPT)
    model = load_model(base, quantize=mode)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantizedLinear) and n != "lm_head"}
    assert layers
    if arch != "gpt_bigcode-mqa":
        assert any(m.fused_parts for m in layers.values())                 # the fused path is exercised
    plain = _logits(model, ids)
    registry = AdapterRegistry(model)
    x = torch.randn(len(ids), model.config.n_embd, generator=torch.Generator().manual_seed(0))
    for name in ("a", "b"):
        key = registry.load(name, lora_adapters[arch][name]).key
        ours = _logits(model, ids, registry, key)
        with torch.no_grad():          # layer by layer, on the same input: our hooks against the hand-made delta
            first_block = {n: m for n, m in layers.items() if ".0." in n and m.in_features == x.shape[1]}
            with registry.step([key], [len(ids)]):
                got = {n: m(x) for n, m in first_block.items()}
            handles = _manual_deltas(model, lora_adapters[arch][name])
            try:
                want = {n: m(x) for n, m in first_block.items()}
                manual = _logits(model, ids)
            finally:
                for h in handles:
                    h.remove()
        assert first_block and any(not torch.equal(got[n], first_block[n](x)) for n in first_block)
        for n in first_block:
            torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-5 * float(want[n].abs().max()))
        assert not torch.allclose(ours, plain, atol=1e-2)                   # the adapter changes the logits
        # through the whole model, float32 round-off differences meet the next layer's bfloat16 input cast
        torch.testing.assert_close(ours, manual, rtol=0, atol=0.02 * float(manual.abs().max()))
    registry.unload("a")
    registry.unload("b")
    torch.testing.assert_close(_logits(model, ids), plain, rtol=0, atol=0)  # hooks gone: the base again


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_adapter_on_quantized_base_follows_the_fp32_reference(
        mode: str, lora_bases: dict[str, Path], lora_adapters: dict[str, dict[str, Path]]) -> None:
    base, adapter = lora_bases["llama"], lora_adapters["llama"]["a"]
    ids = load_tokenizer(base).encode(PROMPT)
    ref_model, q_model = load_model(base), load_model(base, quantize=mode)
    ref_reg, q_reg = AdapterRegistry(ref_model), AdapterRegistry(q_model)
    ref_key, q_key = ref_reg.load("a", adapter).key, q_reg.load("a", adapter).key
    ref_base, q_base = _logits(ref_model, ids), _logits(q_model, ids)
    ref, ours = _logits(ref_model, ids, ref_reg, ref_key), _logits(q_model, ids, q_reg, q_key)

    def mean_abs(t: torch.Tensor) -> float:
        return float(t.abs().mean())

    quant_error = mean_abs(q_base - ref_base)            # what quantizing costs the base model: the tolerance
    ref_delta, q_delta = ref - ref_base, ours - q_base
    delta_error = mean_abs(q_delta - ref_delta)
    print(f"{mode}: base error {quant_error / mean_abs(ref_base):.4f}, adapted error "
          f"{mean_abs(ours - ref) / mean_abs(ref):.4f}, delta error {delta_error / mean_abs(ref_delta):.4f}")
    assert quant_error > 0
    # the adapted quantized model is as far from the adapted fp32 model as the quantized base is from fp32 …
    assert mean_abs(ours - ref) < 2 * quant_error
    # … and what the adapter adds on the quantized base is what it adds on fp32, within that error
    assert delta_error < 2 * quant_error < mean_abs(ref_delta)


def test_mixed_batch_on_quantized_base_gives_each_request_its_tokens_alone(
        lora_bases: dict[str, Path], lora_adapters: dict[str, dict[str, Path]]) -> None:
    base = lora_bases["llama"]
    tok, model = load_tokenizer(base), load_model(base, quantize="int4")
    names = [None, "a", "b", "a"]
    params = [SamplingParams(max_new_tokens=8, adapter_id=n) for n in names]
    together = generate(model, tok, [PROMPT] * 4, params, adapters=lora_adapters["llama"])
    alone = [generate(model, tok, [PROMPT], [p], adapters=lora_adapters["llama"])[0] for p in params[:3]]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone] + [alone[1].token_ids]
    assert len({tuple(c.token_ids) for c in alone}) == 3                  # base, a and b differ

"""LoRA fine-tuning end to end on small random-init models of each architecture: PEFT opens our adapter
in transformers with the same logits as our model and as our merged model; the base never changes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from codefoundry.finetune import FinetuneConfig, LoraSettings, finetune, merge, open_adapter
from codefoundry.model import (
    GPTBigCodeForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Starcoder2Config,
    Starcoder2ForCausalLM,
    load_model,
    preset,
    save_pretrained,
)
from codefoundry.tokenizer import load_tokenizer
from conftest import interrupt_after_steps

SHAPE = dict(hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, bos_token_id=0, eos_token_id=0)


def make_base(arch: str, tokenizer_dir: Path, out: Path) -> Path:
    """A random-init model of `arch` (seed 0) saved with the tokenizer."""
    vocab = len(load_tokenizer(tokenizer_dir))
    torch.manual_seed(0)
    if arch == "gpt_bigcode":
        model = GPTBigCodeForCausalLM(preset("tiny", vocab_size=vocab).replace(n_positions=256))
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, **SHAPE))
    else:
        model = Starcoder2ForCausalLM(Starcoder2Config(vocab_size=vocab, **SHAPE))
    return save_pretrained(model, out, tokenizer_dir=tokenizer_dir)


def write_rows(path: Path, n: int = 24) -> Path:
    """Instruction rows a tiny model can learn: a fixed answer shape per instruction."""
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    rows = [{"instruction": f"Write a function named {words[i % 6]}_{i} that returns {i}.",
             "response": f"def {words[i % 6]}_{i}():\n    return {i}\n"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def small_config(**changes) -> FinetuneConfig:
    base = dict(seq_len=64, micro_batch_size=2, grad_accum=2, max_steps=4, lr=5e-3, eval_interval=2,
                checkpoint_interval=2, device="cpu", precision="fp32", lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    return FinetuneConfig(**{**base, **changes})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("arch", ["gpt_bigcode", "llama", "starcoder2"])
def test_peft_opens_our_adapter_with_our_logits(tmp_path: Path, train_tokenizer_dir: Path, arch: str) -> None:
    base_dir = make_base(arch, train_tokenizer_dir, tmp_path / "base")
    weights_before = _sha(base_dir / "model.safetensors")
    adapter = finetune(base_dir, write_rows(tmp_path / "rows.jsonl"), tmp_path / "adapter", small_config())

    # PEFT's files, in PEFT's layout: HF module paths under base_model.model, only LoRA tensors
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    expected = {"gpt_bigcode": {"c_attn", "c_proj"}, "llama": {"q_proj", "v_proj"},
                "starcoder2": {"q_proj", "v_proj", "c_proj"}}[arch]
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM" and set(cfg["target_modules"]) == expected
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and Path(cfg["base_model_name_or_path"]) == base_dir.resolve()
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert tensors and all(k.startswith("base_model.model.") and ".lora_" in k for k in tensors)
    assert _sha(base_dir / "model.safetensors") == weights_before          # the base is never written

    ids = torch.randint(19, len(load_tokenizer(train_tokenizer_dir)), (2, 21),
                        generator=torch.Generator().manual_seed(1))
    hf = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float64).eval()
    with torch.no_grad():
        base_logits = hf(ids).logits
        theirs = __import__("peft").PeftModel.from_pretrained(hf, adapter).eval()(ids).logits
        ours = open_adapter(load_model(base_dir, dtype=torch.float64), adapter).eval()(ids)
    assert (theirs - base_logits).abs().max().item() > 1e-3                 # the adapter learned something
    assert (ours - theirs).abs().max().item() <= 1e-9                       # float64: the same function

    merged = merge(base_dir, adapter, tmp_path / "merged")
    with torch.no_grad():
        ours_merged = load_model(merged, dtype=torch.float64)(ids)
        hf_merged = transformers.AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float64).eval()(ids).logits
    # merged weights are saved in float32 (the base's dtype): equal up to float32 rounding of W + BA
    assert (ours_merged - theirs).abs().max().item() <= 1e-5
    assert (hf_merged - ours_merged).abs().max().item() <= 1e-9
    assert load_tokenizer(merged).get_vocab() == load_tokenizer(base_dir).get_vocab()
    manifest = json.loads((merged / "manifest.json").read_text())
    assert manifest["kind"] == "model" and {"adapter", "base_model"} <= set(manifest["inputs"])


def test_base_weights_unchanged_in_memory(tmp_path: Path, train_tokenizer_dir: Path) -> None:
    """Only LoRA tensors get gradients: every base parameter is bit-identical after training."""
    from codefoundry.finetune.data import jsonl_batches
    from codefoundry.finetune.loop import finetune_loop
    from codefoundry.finetune.lora import add_lora, trainable_parameters

    base_dir = make_base("llama", train_tokenizer_dir, tmp_path / "base")
    model = load_model(base_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_base = model.num_parameters()
    config = small_config(lora=LoraSettings(r=4, alpha=8, dropout=0.1, target_modules=["q_proj", "down_proj"]))
    train, val, _ = jsonl_batches(write_rows(tmp_path / "rows.jsonl"), load_tokenizer(base_dir), config)
    peft_model = add_lora(model, config.lora)
    trainable, total = trainable_parameters(peft_model)
    lora = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert all(".lora_A." in n or ".lora_B." in n for n in lora) and trainable == sum(p.numel() for p in lora.values())
    # q_proj 64→64 and down_proj 112→64 in 2 layers, rank 4: r·(in + out) each
    assert trainable == 2 * 4 * ((64 + 64) + (112 + 64)) and total == trainable + n_base
    initial = {n: p.detach().clone() for n, p in lora.items()}
    result = finetune_loop(peft_model, train, val, config, tmp_path / "run", torch.device("cpu"))
    assert result.steps == 4 and result.peak_memory_bytes > 0
    after = peft_model.get_base_model().state_dict()
    for name, tensor in before.items():
        key = name if name in after else name.replace(".weight", ".base_layer.weight").replace(
            ".bias", ".base_layer.bias")
        assert torch.equal(after[key], tensor), name
    assert any(not torch.equal(p, initial[n]) for n, p in lora.items())


def test_resume_repeats_the_uninterrupted_losses(tmp_path: Path, train_tokenizer_dir: Path) -> None:
    base_dir = make_base("gpt_bigcode", train_tokenizer_dir, tmp_path / "base")
    rows = write_rows(tmp_path / "rows.jsonl")
    # dropout on: the RNG in the checkpoint matters; decay_steps fixes the cosine horizon of both runs
    config = small_config(max_steps=6, decay_steps=6, warmup_steps=2,
                          lora=LoraSettings(r=4, alpha=8, dropout=0.2))
    straight = finetune(base_dir, rows, tmp_path / "straight", config)
    part = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        interrupt_after_steps(3, lambda: finetune(base_dir, rows, part, config))
    assert json.loads((part / "checkpoints" / "latest.json").read_text())["step"] == 3
    finetune(base_dir, rows, part, config, resume=True)

    def losses(run: Path) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if "loss" in r]

    assert losses(part) == losses(straight) and len(losses(straight)) == 6
    a, b = (load_file(str(d / "adapter_model.safetensors")) for d in (straight, part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_time_budget_stops_after_the_step_that_reaches_it(tmp_path: Path, train_tokenizer_dir: Path) -> None:
    from codefoundry.finetune.data import jsonl_batches
    from codefoundry.finetune.loop import finetune_loop
    from codefoundry.finetune.lora import add_lora

    base_dir = make_base("gpt_bigcode", train_tokenizer_dir, tmp_path / "base")
    config = small_config(max_steps=None, max_time=1e-6)
    train, val, _ = jsonl_batches(write_rows(tmp_path / "rows.jsonl"), load_tokenizer(base_dir), config)
    result = finetune_loop(add_lora(load_model(base_dir), config.lora), train, val, config, tmp_path / "run",
                           torch.device("cpu"))
    assert result.steps == 1 and result.val_loss is not None and result.val_loss_before is not None
    assert json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())["step"] == 1


def test_bf16_follows_fp32_and_keeps_the_adapter_fp32(tmp_path: Path, train_tokenizer_dir: Path) -> None:
    """bf16 base weights (what `auto` picks on a GPU or a CPU with bf16 hardware): the same losses up to bf16
    rounding, an fp32 adapter that transformers + peft open."""
    from codefoundry.finetune.loop import use_bf16

    base_dir = make_base("llama", train_tokenizer_dir, tmp_path / "base")
    rows = write_rows(tmp_path / "rows.jsonl")
    runs = {p: finetune(base_dir, rows, tmp_path / p, small_config(precision=p, max_steps=8, eval_interval=8,
                                                                   checkpoint_interval=8))
            for p in ("fp32", "bf16")}

    def losses(run: Path) -> list[float]:
        return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]

    fp32, bf16 = losses(runs["fp32"]), losses(runs["bf16"])
    assert len(fp32) == len(bf16) == 8 and fp32 != bf16                      # bf16 did run: other rounding
    assert max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)) < 0.02 * max(fp32), (fp32, bf16)
    assert bf16[-1] < bf16[0] - 0.05 and fp32[-1] < fp32[0] - 0.05, (fp32, bf16)   # both learn
    tensors = load_file(str(runs["bf16"] / "adapter_model.safetensors"))
    assert tensors and all(t.dtype == torch.float32 for t in tensors.values())
    hf = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        theirs = __import__("peft").PeftModel.from_pretrained(hf, runs["bf16"]).eval()(ids).logits
        ours = open_adapter(load_model(base_dir), runs["bf16"]).eval()(ids)
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert use_bf16(small_config(precision="auto"), torch.device("cuda"))
    assert not use_bf16(small_config(precision="fp32"), torch.device("cuda"))

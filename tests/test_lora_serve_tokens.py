"""Adapters with trained embedding rows (PEFT's `trainable_token_indices`): served per request, merged, opened.

The reference is transformers + `peft.PeftModel` on the same checkpoint: on a model whose LM head is tied to
its embedding, PEFT replaces the rows of those ids in both. A request with the adapter must get exactly that,
a base request in the same batch exactly the base model, and merging (the shared weight) the same function.
"""

from __future__ import annotations

import json
from pathlib import Path

import peft
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from codefoundry.errors import ArtifactError
from codefoundry.finetune import merge, open_adapter
from codefoundry.generate import Engine, SamplingParams, ScheduledSequence, generate
from codefoundry.model import LlamaConfig, LlamaForCausalLM, load_model, save_pretrained
from codefoundry.tokenizer import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, load_tokenizer
from fixtures_lora_serve import ROTARY_SHAPE, make_lora_adapter

FIM = (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)
PROMPT = f"{FIM_PREFIX}def add(a, b):\n{FIM_SUFFIX}\n    return c\n{FIM_MIDDLE}"


@pytest.fixture(scope="module")
def tied_llama(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """A Llama with its LM head tied to the embedding (as SmolLM2's), random init with a wide spread."""
    vocab = len(load_tokenizer(tiny_tokenizer_dir))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, num_key_value_heads=2, tie_word_embeddings=True,
                                         **ROTARY_SHAPE))
    return save_pretrained(model, tmp_path_factory.mktemp("tied") / "base", tokenizer_dir=tiny_tokenizer_dir, seed=0)


def fim_ids(base: Path) -> list[int]:
    tok = load_tokenizer(base)
    return sorted(tok.convert_tokens_to_ids(t) for t in FIM)


def token_adapter(base: Path, out: Path, seed: int = 3) -> Path:
    """A PEFT adapter (peft's own save) with LoRA on q/v and trained rows of the FIM tokens, all random."""
    adapter = make_lora_adapter(base, out, ["q_proj", "v_proj"], seed=seed, trainable_token_indices=fim_ids(base))
    key = "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert key in tensors, sorted(tensors)                 # peft's layout, the one our loader reads
    gen = torch.Generator().manual_seed(seed)
    save_file({**tensors, key: torch.randn(tensors[key].shape, generator=gen)},
              str(adapter / "adapter_model.safetensors"))
    return adapter


def _peft_logits(base: Path, adapter: Path | None, ids: list[int]) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float64)
    if adapter is not None:
        model = peft.PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        return model.eval()(torch.tensor([ids])).logits[0]


def test_token_rows_equal_peft_per_request_in_one_forward(tied_llama: Path, tmp_path: Path) -> None:
    adapter = token_adapter(tied_llama, tmp_path / "adapter")
    tok = load_tokenizer(tied_llama)
    ids = tok.encode(PROMPT)
    assert set(fim_ids(tied_llama)) <= set(ids)
    engine = Engine(load_model(tied_llama, dtype=torch.float64), tok, num_blocks=64, block_size=4)
    engine.add_adapter("fim", str(adapter))
    key = engine.lora.key("fim")
    seqs, first = [], 0
    for adapter_id in (key, None, key):                    # adapter, base, adapter: one step, blocks disjoint
        blocks = list(range(first, first + -(-len(ids) // 4)))
        first += len(blocks)
        seqs.append(ScheduledSequence(ids, 0, len(ids), blocks, all_logits=True, adapter_id=adapter_id))
    ours = [t.cpu() for t in engine.runner.execute(seqs).all]
    with_rows, base = _peft_logits(tied_llama, adapter, ids), _peft_logits(tied_llama, None, ids)
    assert (ours[0] - with_rows).abs().max().item() <= 1e-9 and (ours[2] - with_rows).abs().max().item() <= 1e-9
    assert (ours[1] - base).abs().max().item() <= 1e-9
    # the rows matter on both sides: the input rows change later positions, the tied head the FIM tokens' logits
    no_rows = tmp_path / "lora-only"
    make_lora_adapter(tied_llama, no_rows, ["q_proj", "v_proj"], seed=3)
    lora_only = _peft_logits(tied_llama, no_rows, ids)
    fim = fim_ids(tied_llama)
    other = [i for i in range(with_rows.shape[1]) if i not in fim]
    assert (with_rows[:, other] - lora_only[:, other]).abs().max().item() > 1e-3
    assert (ours[0][:, fim] - lora_only[:, fim]).abs().max().item() > 1e-3


def test_served_fim_request_equals_the_merged_model_and_base_requests_the_base(tied_llama: Path,
                                                                              tmp_path: Path) -> None:
    adapter = token_adapter(tied_llama, tmp_path / "adapter")
    merged = merge(tied_llama, adapter, tmp_path / "merged")
    tok = load_tokenizer(tied_llama)
    prompts = [tok.encode(PROMPT), tok.encode("def add(a, b):\n"), tok.encode(PROMPT + "    c = a")]
    params = [SamplingParams(max_new_tokens=12, ignore_eos=True, adapter_id=a) for a in ("fim", None, "fim")]
    model = load_model(tied_llama)
    batched = generate(model, tok, prompts, params, adapters={"fim": adapter}, max_batch_tokens=16)
    base_alone = generate(load_model(tied_llama), tok, [prompts[1]], SamplingParams(max_new_tokens=12,
                                                                                    ignore_eos=True))
    merged_alone = generate(load_model(merged), tok, [prompts[0], prompts[2]],
                            SamplingParams(max_new_tokens=12, ignore_eos=True))
    assert [batched[0].token_ids, batched[2].token_ids] == [c.token_ids for c in merged_alone]
    assert batched[1].token_ids == base_alone[0].token_ids
    assert batched[0].token_ids != generate(load_model(tied_llama), tok, [prompts[0]], SamplingParams(
        max_new_tokens=12, ignore_eos=True))[0].token_ids                    # the adapter changes the answer
    assert not any(m._forward_hooks for m in model.modules())               # the base model again

    # merged: one weight, so the tied head got the rows too; and our PEFT path (eval's merge) is that function
    ids = torch.tensor([prompts[0]])
    with torch.no_grad():
        ours = open_adapter(load_model(tied_llama, dtype=torch.float64), adapter).eval()(ids)[0]
    assert (ours - _peft_logits(tied_llama, adapter, prompts[0])).abs().max().item() <= 1e-9


def test_token_rows_that_do_not_fit_the_model_are_refused(tied_llama: Path, tmp_path: Path) -> None:
    adapter = token_adapter(tied_llama, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["trainable_token_indices"][-1] = len(load_tokenizer(tied_llama)) + 5   # (not a text edit: the base's
    (adapter / "adapter_config.json").write_text(json.dumps(config))             # temporary path holds digits)
    engine = Engine(load_model(tied_llama), load_tokenizer(tied_llama), num_blocks=16, block_size=4)
    with pytest.raises(ArtifactError, match="outside this model's vocabulary"):
        engine.lora.load("bad", adapter)


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_token_rows_are_served_on_a_quantized_base(tied_llama: Path, tmp_path: Path, quantize: str) -> None:
    """A quantized tied model reads its embedding from the int8 head's table: an adapter's rows still replace
    those ids' embeddings and those ids' logits (from the head's own input), for its requests only."""
    adapter = token_adapter(tied_llama, tmp_path / "adapter")
    tok = load_tokenizer(tied_llama)
    ids = tok.encode(PROMPT)
    model = load_model(tied_llama, quantize=quantize)
    engine = Engine(model, tok, num_blocks=64, block_size=4)
    engine.add_adapter("fim", str(adapter))
    key = engine.lora.key("fim")
    rows = load_file(str(adapter / "adapter_model.safetensors"))[
        "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"]
    fim = torch.tensor(fim_ids(tied_llama))
    seen: dict[str, list[torch.Tensor]] = {"embedded": [], "hidden": []}
    hooks = [model.model.embed_tokens.register_forward_hook(lambda m, i, o: seen["embedded"].append(o.detach())),
             model.lm_head.register_forward_pre_hook(lambda m, i: seen["hidden"].append(i[0].detach()))]
    seqs, first = [], 0
    for adapter_id in (key, None):
        blocks = list(range(first, first + -(-len(ids) // 4)))
        first += len(blocks)
        seqs.append(ScheduledSequence(ids, 0, len(ids), blocks, all_logits=True, adapter_id=adapter_id))
    ours = [t.cpu() for t in engine.runner.execute(seqs).all]
    for hook in hooks:
        hook.remove()
    embedded = seen["embedded"][0].reshape(2 * len(ids), -1)
    hidden = seen["hidden"][0].reshape(2 * len(ids), -1)
    at = [i for i, t in enumerate(ids) if t in set(fim.tolist())]
    for i in at:                                           # the adapter's request: the trained rows …
        assert torch.equal(embedded[i], rows[fim.tolist().index(ids[i])].to(embedded.dtype))
    assert not torch.equal(embedded[len(ids) + at[0]], embedded[at[0]])   # … the base request: the base's
    expected = (hidden[:len(ids)] @ rows.T.to(hidden.dtype))
    assert (ours[0][:, fim] - expected).abs().max().item() <= 1e-5
    base = Engine(load_model(tied_llama, quantize=quantize), tok, num_blocks=64, block_size=4)
    alone = base.runner.execute([ScheduledSequence(ids, 0, len(ids), list(range(-(-len(ids) // 4))),
                                                   all_logits=True)]).all[0].cpu()
    assert torch.equal(ours[1], alone)                     # the base request in the same batch: the base alone
    assert not torch.equal(ours[0][:, fim], alone[:, fim])

"""generate() as a whole: continuous batching under a small KV pool, seeds in batches, logprobs vs transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codefoundry.generate import (
    Engine,
    FinishReason,
    KVCacheManager,
    ModelRunner,
    SamplingParams,
    ScheduledSequence,
    ValidationError,
    generate,
)
from codefoundry.model import load_model
from codefoundry.tokenizer import load_tokenizer

PROMPTS = ["def add(a, b):\n", "import json\n", "class Stack:\n    def push(self, x):\n", "int main() {",
           "// sort an array\nfunction sort(xs) {", "#!/bin/sh\nset -e\n"]


@pytest.fixture(scope="module")
def model_and_tokenizer(peaky_model_dir: Path):
    return load_model(peaky_model_dir, dtype=torch.float64), load_tokenizer(peaky_model_dir)


def test_small_pool_preempts_and_refills_without_changing_outputs(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    params = SamplingParams(max_new_tokens=30, ignore_eos=True)
    ample = generate(model, tokenizer, PROMPTS, params)
    # 4-token blocks, room for about two sequences at a time: sequences wait, get preempted and recomputed
    engine = Engine(model, tokenizer, num_blocks=24, block_size=4, max_batch_tokens=20)
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(i, prompt, params)
    done, preempted, admitted = {}, [], []
    while engine.has_unfinished():
        step = engine.step()
        assert engine.stats().num_used_blocks <= 24 and step.num_scheduled >= len(step.outputs)
        preempted += step.preempted_ids
        admitted += step.admitted_ids
        done.update({e.request_id: e.completion for e in step.outputs if e.completion})
    tight = [done[i] for i in range(len(PROMPTS))]
    stats = engine.stats()
    assert preempted and stats.num_preemptions == len(preempted) and stats.num_used_blocks == 0
    assert sorted(admitted) == sorted([*range(len(PROMPTS)), *preempted])     # each preempted one came back
    narrow = generate(model, tokenizer, PROMPTS, params, max_batch_size=2)
    for a, t, n in zip(ample, tight, narrow, strict=True):
        assert t.token_ids == a.token_ids == n.token_ids
        assert t.text == a.text and t.finish_reason is FinishReason.LENGTH
        assert t.logprobs == pytest.approx(a.logprobs, abs=1e-9)


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    mine = SamplingParams(max_new_tokens=20, temperature=0.9, top_k=50, seed=1234, ignore_eos=True)
    alone = generate(model, tokenizer, [PROMPTS[0]], mine)[0]
    others = [SamplingParams(max_new_tokens=25, do_sample=True, seed=s, ignore_eos=True) for s in range(5)]
    batch = generate(model, tokenizer, [*PROMPTS[1:3], PROMPTS[0], *PROMPTS[3:]], [*others[:2], mine, *others[2:]])
    assert batch[2].token_ids == alone.token_ids and batch[2].seed == 1234
    other_seed = generate(model, tokenizer, [PROMPTS[0]], SamplingParams(**{**mine.__dict__, "seed": 99}))[0]
    assert other_seed.token_ids != alone.token_ids
    unseeded = generate(model, tokenizer, [PROMPTS[0]] * 2, SamplingParams(do_sample=True, max_new_tokens=3))
    assert unseeded[0].seed is not None and unseeded[0].seed != unseeded[1].seed
    assert generate(model, tokenizer, [PROMPTS[0]], SamplingParams(max_new_tokens=3))[0].seed is None


def test_logprobs_match_transformers(model_and_tokenizer, peaky_model_dir: Path) -> None:
    """Generated-token and prompt-token logprobs equal log_softmax of transformers' logits (float64)."""
    from transformers import AutoModelForCausalLM

    model, tokenizer = model_and_tokenizer
    hf = AutoModelForCausalLM.from_pretrained(peaky_model_dir, dtype=torch.float64).eval()
    params = SamplingParams(max_new_tokens=10, ignore_eos=True, top_n_tokens=3, decoder_input_details=True)
    prompt = PROMPTS[2]
    [c] = generate(model, tokenizer, [prompt], params, max_batch_tokens=8)      # prompt logprobs over 3 chunks
    ids = torch.tensor([c.prompt_token_ids + c.token_ids])
    with torch.no_grad():
        lp = hf(ids).logits[0].log_softmax(-1)                                  # (T, V)
    n = len(c.prompt_token_ids)
    expected_prompt = [lp[p - 1, ids[0, p]].item() for p in range(1, n)]
    assert c.prefill_logprobs[0] is None and len(c.prefill_logprobs) == n
    assert c.prefill_logprobs[1:] == pytest.approx(expected_prompt, abs=1e-9)
    expected = [lp[n - 1 + i, t].item() for i, t in enumerate(c.token_ids)]
    assert c.logprobs == pytest.approx(expected, abs=1e-9)
    for i, tok in enumerate(c.tokens):
        best = lp[n - 1 + i].topk(3)
        assert [t for t, _ in tok.top_tokens] == best.indices.tolist()
        assert tok.top_tokens[0][0] == tok.id and not tok.special
    assert "".join(t.text for t in c.tokens) == c.text


def test_runner_prefill_logits_equal_the_training_forward(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    ids = tokenizer.encode(PROMPTS[2] + PROMPTS[4])
    kv = KVCacheManager(num_blocks=8, block_size=4)
    runner = ModelRunner(model, num_blocks=8, block_size=4)
    kv.allocate("s", 7)
    first = runner.execute([ScheduledSequence(ids, 0, 7, kv.block_table("s"), all_logits=True)])
    kv.allocate("s", len(ids) - 7)
    rest = runner.execute([ScheduledSequence(ids, 7, len(ids) - 7, kv.block_table("s"), all_logits=True)])
    with torch.no_grad():
        full = model(torch.tensor([ids]))[0]
    assert torch.allclose(torch.cat([first.all[0], rest.all[0]]), full, atol=1e-10)
    assert torch.equal(rest.last[0], rest.all[0][-1])


def test_bad_requests_are_refused_with_the_reason(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ValidationError, match="`inputs` cannot be empty"):
        generate(model, tokenizer, [""], SamplingParams())
    n_pos = model.config.n_positions
    with pytest.raises(ValidationError, match=f"must be <= {n_pos}. Given: 4 `inputs` tokens and {n_pos} "):
        generate(model, tokenizer, [[5, 6, 7, 8]], SamplingParams(max_new_tokens=n_pos))
    with pytest.raises(ValidationError, match="needs 2 KV blocks of 16 tokens but the pool has num_blocks=1"):
        generate(model, tokenizer, [[5, 6, 7, 8]], SamplingParams(max_new_tokens=20), num_blocks=1)
    with pytest.raises(ValidationError, match="2 SamplingParams for 1 prompts"):
        generate(model, tokenizer, ["x"], [SamplingParams(), SamplingParams()])


def test_a_model_in_training_mode_generates_without_dropout_and_stays_in_training(model_and_tokenizer) -> None:
    from codefoundry.model import GPTBigCodeForCausalLM

    model, tokenizer = model_and_tokenizer
    dropped = GPTBigCodeForCausalLM(model.config.replace(resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5)).double()
    dropped.load_state_dict(model.state_dict())
    dropped.train()
    params = SamplingParams(max_new_tokens=12, ignore_eos=True)
    assert generate(dropped, tokenizer, PROMPTS[:2], params)[1].token_ids == \
        generate(model, tokenizer, PROMPTS[:2], params)[1].token_ids
    assert dropped.training and all(m.training for m in dropped.modules())
    assert generate(model, tokenizer, [], params) == []


def test_engine_streams_tokens_and_abort_frees_blocks(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    params = SamplingParams(max_new_tokens=16, ignore_eos=True, stop=["@@never@@"])
    expected = generate(model, tokenizer, PROMPTS[:3], params)
    engine = Engine(model, tokenizer, num_blocks=64, block_size=4)
    for rid, prompt in zip(("a", "b", "c"), PROMPTS[:3], strict=True):
        assert engine.add_request(rid, prompt, params) is None           # greedy: no seed
    with pytest.raises(ValueError, match="already queued"):
        engine.add_request("b", PROMPTS[0], params)
    streamed: dict[str, str] = {"a": "", "b": "", "c": ""}
    finished = {}
    for _ in range(5):
        for e in engine.step().outputs:
            streamed[e.request_id] += e.text
    used = engine.stats().num_used_blocks
    assert engine.abort("b") and not engine.abort("b") and not engine.abort("zzz")
    assert engine.stats().num_used_blocks < used and engine.kv.block_table("b") == []
    while engine.has_unfinished():
        for e in engine.step().outputs:
            assert e.request_id != "b"
            streamed[e.request_id] += e.text
            if e.completion:
                finished[e.request_id] = e.completion
    assert engine.stats().num_used_blocks == 0 and not engine.step().outputs
    assert finished["a"].token_ids == expected[0].token_ids and finished["c"].token_ids == expected[2].token_ids
    assert streamed["a"] == finished["a"].text == expected[0].text and streamed["c"] == expected[2].text
    assert expected[1].text.startswith(streamed["b"]) and len(streamed["b"]) < len(expected[1].text)

"""Prompt-lookup speculative decoding: the n-gram proposer, and outputs unchanged by speculation."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from codefoundry.generate import Engine, FinishReason, SamplingParams, generate
from codefoundry.generate.speculative import Drafted, NgramProposer, num_accepted
from codefoundry.model import load_model
from codefoundry.tokenizer import load_tokenizer

# prompts whose greedy continuations repeat themselves (an untrained peaky model loops), so drafts get
# proposed, accepted in part and rejected
PROMPTS = ["def add(a, b):\n    return a + b\n\ndef add(a, b):\n", "import json\n", "for i in range(10):\n",
           "class Stack:\n    def push(self, x):\n        self.items.append(x)\n", "int main() {", "x = x + 1\nx = x",
           "// sort an array\nfunction sort(xs) {", "#!/bin/sh\nset -e\n", "a b c a b c a b", "if (x) {\n  y();\n}\n"]


@pytest.fixture(scope="module")
def model_and_tokenizer(peaky_model_dir: Path):
    return load_model(peaky_model_dir, dtype=torch.float64), load_tokenizer(peaky_model_dir)


def test_proposer_copies_what_followed_the_latest_match_of_the_longest_ngram() -> None:
    p = NgramProposer(max_ngram=3, min_ngram=1)
    assert p.propose([1, 2, 3, 9, 9, 7, 1, 2, 3, 5, 6, 1, 2, 3], 3) == [5, 6, 1]     # latest "1 2 3" wins
    assert p.propose([5, 1, 2, 8, 4, 2], 4) == [8, 4, 2]                              # falls back to a 1-gram
    assert p.propose([1, 2, 3, 4], 4) == []                                         # nothing recurs
    assert p.propose([7, 7, 7], 5) == [7]                                          # a match right before the suffix
    assert NgramProposer(max_ngram=3, min_ngram=2).propose([5, 1, 2, 8, 4, 2], 4) == []
    assert p.propose([1, 2, 3, 1, 2], 0) == []
    with pytest.raises(ValueError, match="min_ngram"):
        NgramProposer(max_ngram=1, min_ngram=2)


def test_acceptance_keeps_the_draft_up_to_the_first_disagreement() -> None:
    assert num_accepted([4, 5, 6], [4, 5, 6, 7]) == 3
    assert num_accepted([4, 5, 6], [4, 9, 6, 7]) == 1
    assert num_accepted([4, 5, 6], [1, 5, 6, 7]) == 0
    assert num_accepted([], [3]) == 0
    view = Drafted([1, 2], [3])
    assert list(view) == [1, 2, 3] and len(view) == 3 and view[-1] == 3 and view[1:] == [2, 3]


def test_greedy_outputs_are_identical_with_and_without_speculation(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    plain = generate(model, tokenizer, PROMPTS, SamplingParams(max_new_tokens=40, ignore_eos=True, speculate=0))
    for k in (1, 3, 8):
        params = SamplingParams(max_new_tokens=40, ignore_eos=True, speculate=k)
        batched = generate(model, tokenizer, PROMPTS, params)
        for a, b in zip(plain, batched, strict=True):
            assert b.token_ids == a.token_ids and b.text == a.text
            assert b.finish_reason is FinishReason.LENGTH and b.generated_tokens == 40
            assert b.logprobs == pytest.approx(a.logprobs, abs=1e-9)
    alone = [generate(model, tokenizer, [p], SamplingParams(max_new_tokens=40, ignore_eos=True, speculate=5))[0]
             for p in PROMPTS[:4]]
    assert [c.token_ids for c in alone] == [c.token_ids for c in plain[:4]]


def test_speculation_accepts_drafts_and_takes_fewer_steps(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer

    def run(speculate: int) -> tuple[list[int], int, Engine]:
        engine = Engine(model, tokenizer, num_blocks=64, block_size=4, speculate=speculate)
        engine.add_request("a", PROMPTS[0], SamplingParams(max_new_tokens=48, ignore_eos=True))
        tokens, steps = [], 0
        while engine.has_unfinished():
            out = engine.step().outputs
            steps += 1
            tokens += [o.token.id for o in out]
            for request in engine.scheduler.running:     # rejected drafts' blocks went back after each step
                assert len(engine.kv.block_table(request.request_id)) == engine.kv.blocks_needed(
                    request.num_computed_tokens)
        return tokens, steps, engine

    plain, plain_steps, _ = run(0)
    fast, fast_steps, engine = run(6)
    stats = engine.stats()
    assert fast == plain and len(fast) == 48
    assert stats.spec_draft_tokens > 0 and 0 < stats.spec_accepted_tokens <= stats.spec_draft_tokens
    assert fast_steps < plain_steps
    assert stats.num_used_blocks == 0        # every block, rolled-back ones included, given back


def test_speculating_and_plain_requests_share_a_batch_under_preemption(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    params = [SamplingParams(max_new_tokens=30, ignore_eos=True, speculate=6 if i % 2 else 0)
              for i in range(len(PROMPTS))]
    expected = generate(model, tokenizer, PROMPTS, SamplingParams(max_new_tokens=30, ignore_eos=True))
    engine = Engine(model, tokenizer, num_blocks=40, block_size=4, max_batch_tokens=24)
    for i, (prompt, p) in enumerate(zip(PROMPTS, params, strict=True)):
        engine.add_request(i, prompt, p)
    done, preempted = {}, 0
    while engine.has_unfinished():
        step = engine.step()
        preempted += len(step.preempted_ids)
        assert engine.stats().num_used_blocks <= 40
        done.update({e.request_id: e.completion for e in step.outputs if e.completion})
    assert preempted > 0 and engine.stats().spec_accepted_tokens > 0
    for i, c in enumerate(expected):
        assert done[i].token_ids == c.token_ids and done[i].text == c.text


def test_seeded_sampling_gives_the_same_tokens_with_and_without_speculation(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    prompts = PROMPTS[:6]
    params = [SamplingParams(max_new_tokens=30, temperature=0.7, top_k=20, repetition_penalty=1.1, seed=s,
                             ignore_eos=True) for s in range(len(prompts))]
    plain = generate(model, tokenizer, prompts, params)
    spec = generate(model, tokenizer, prompts, [dataclasses.replace(p, speculate=6) for p in params])
    assert [c.token_ids for c in spec] == [c.token_ids for c in plain]
    for a, b in zip(plain, spec, strict=True):
        assert b.logprobs == pytest.approx(a.logprobs, abs=1e-9)


def _chi2_critical(dof: int, z: float = 3.09) -> float:
    """The chi-square quantile at the normal quantile z (3.09: p = 0.001), by Wilson and Hilferty's approximation."""
    a = 2.0 / (9 * dof)
    return dof * (1 - a + z * math.sqrt(a)) ** 3


class _FixedProposer:
    """Always drafts the same token: the rule under test is acceptance, so drafts must come every step."""

    def __init__(self, token: int) -> None:
        self.token = token

    def propose(self, token_ids: list[int], num_tokens: int) -> list[int]:
        return [self.token] * num_tokens


def test_sampled_tokens_keep_the_models_distribution_under_speculation(model_and_tokenizer) -> None:
    """Chi-square of (first, second) generated token pairs over many seeds against the model's exact joint.

    The second token is where a draft is verified (the first comes from the prefill); the draft is the
    likeliest second token, so it is accepted often and rejected often. A rule that accepts drafts too
    often, or resamples wrongly after a rejection, shifts these pairs far past the critical value.
    """
    model, tokenizer = model_and_tokenizer
    prompt = tokenizer.encode(PROMPTS[8])
    temperature, n = 0.5, 1500
    # the exact joint p(t0) p(t1 | t0), at the sampler's temperature, in float64
    vocab = len(tokenizer)
    with torch.inference_mode():
        first = torch.softmax(model(torch.tensor([prompt]))[0, -1, :vocab].double() / temperature, -1)
        t0s = [t for t in first.argsort(descending=True).tolist() if first[t] * n >= 1][:64]
        batch = torch.tensor([[*prompt, t] for t in t0s])
        second = torch.softmax(model(batch)[:, -1, :vocab].double() / temperature, -1)
    joint = second * first[t0s][:, None]
    draft = int(joint.sum(0).argmax())
    expected: dict[tuple[int, int], float] = {}
    for i, t0 in enumerate(t0s):
        for t1 in (joint[i] * n >= 5).nonzero().flatten().tolist():
            expected[t0, t1] = float(joint[i, t1] * n)
    assert len(expected) >= 8 and sum(expected.values()) > 0.2 * n       # the rest is pooled in one cell

    engine = Engine(model, tokenizer, num_blocks=n * 2, block_size=16, speculate=1, proposer=_FixedProposer(draft))
    for seed in range(n):
        engine.add_request(seed, prompt, SamplingParams(max_new_tokens=3, temperature=temperature, seed=seed + 7,
                                                        ignore_eos=True))
    pairs: dict[int, list[int]] = {}
    while engine.has_unfinished():
        for o in engine.step().outputs:
            pairs.setdefault(o.request_id, []).append(o.token.id)
    stats = engine.stats()
    assert stats.spec_draft_tokens >= n and n // 20 < stats.spec_accepted_tokens < stats.spec_draft_tokens - n // 20
    counts: dict[tuple[int, int], int] = {}
    for tokens in pairs.values():
        counts[tokens[0], tokens[1]] = counts.get((tokens[0], tokens[1]), 0) + 1
    rest_expected = n - sum(expected.values())
    rest_seen = n - sum(counts.get(cell, 0) for cell in expected)
    chi2 = sum((counts.get(cell, 0) - e) ** 2 / e for cell, e in expected.items())
    chi2 += (rest_seen - rest_expected) ** 2 / rest_expected
    assert chi2 < _chi2_critical(len(expected)), (chi2, len(expected))

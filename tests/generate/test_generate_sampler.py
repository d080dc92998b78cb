"""The sampler: each knob against its reference definition, seeds, batch independence."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from codefoundry.generate import Sampler, SampleRow, SamplingParams, ValidationError, uniform

V = 50


def logits(rows: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, V, generator=g, dtype=torch.float64) * 3


def full_logprobs(scores: torch.Tensor, params: SamplingParams, history: list[int] | None = None) -> torch.Tensor:
    """The sampler's whole distribution for one row (asked as top_n_tokens = V), in id order."""
    p = SamplingParams(**{**params.__dict__, "top_n_tokens": V})
    res = Sampler().sample(scores, [SampleRow(p, history or [], step=0, seed=0)])
    out = torch.full((V,), float("-inf"), dtype=torch.float64)
    for i, lp in res.top_tokens[0]:
        out[i] = lp
    return out


def draw_frequencies(scores: torch.Tensor, params: SamplingParams, n: int = 4000, seed: int = 7) -> torch.Tensor:
    """Empirical distribution over n steps of one seeded request (each step is a fresh uniform)."""
    sampler, counts = Sampler(), torch.zeros(V, dtype=torch.float64)
    rows = [SampleRow(params, [], step=s, seed=seed) for s in range(n)]
    res = sampler.sample(scores.expand(n, V), rows)
    counts.index_add_(0, torch.tensor(res.token_ids), torch.ones(n, dtype=torch.float64))
    return counts / n


@pytest.mark.parametrize(("params", "hf_warper"), [
    (SamplingParams(temperature=0.5), TemperatureLogitsWarper(0.5)),
    (SamplingParams(do_sample=True, top_k=5), TopKLogitsWarper(5)),
    (SamplingParams(top_p=0.6), TopPLogitsWarper(0.6)),
    (SamplingParams(typical_p=0.4), TypicalLogitsWarper(0.4)),
], ids=["temperature", "top_k", "top_p", "typical_p"])
def test_each_warper_gives_the_reference_distribution(params: SamplingParams, hf_warper) -> None:
    scores = logits()
    expected = torch.log_softmax(hf_warper(torch.zeros(1, 1, dtype=torch.long), scores.clone())[0], dim=-1)
    ours = full_logprobs(scores, params)
    assert torch.equal(torch.isinf(ours), torch.isinf(expected))
    finite = torch.isfinite(expected)
    assert torch.allclose(ours[finite], expected[finite], atol=1e-12)
    baseline = torch.log_softmax(scores[0], dim=-1)
    assert not torch.allclose(ours[finite], baseline[finite]), "the knob changed nothing"
    # and the draws follow it: total variation distance of 4000 seeded draws
    tv = 0.5 * (draw_frequencies(scores, params) - expected.exp()).abs().sum()
    assert tv < 0.05


def test_temperature_sharpens_and_flattens() -> None:
    scores = logits()
    top = int(scores.argmax())
    cold = draw_frequencies(scores, SamplingParams(temperature=0.3))[top]
    plain = draw_frequencies(scores, SamplingParams(do_sample=True))[top]
    hot = draw_frequencies(scores, SamplingParams(temperature=3.0))[top]
    assert cold > plain > hot


def test_repetition_penalty_matches_hf_and_frequency_and_presence_penalties_match_tgi() -> None:
    scores, history = logits(), [3, 3, 3, 7, 11]
    expected = RepetitionPenaltyLogitsProcessor(1.8)(torch.tensor([history]), scores.clone())[0].log_softmax(-1)
    ours = full_logprobs(scores, SamplingParams(repetition_penalty=1.8), history)
    assert torch.allclose(ours, expected, atol=1e-12)
    assert all(ours[t] < torch.log_softmax(scores[0], -1)[t] for t in (3, 7, 11) if scores[0, t] > 0)

    counts = torch.zeros(V, dtype=torch.float64)
    counts[3], counts[7], counts[11] = 3, 1, 1
    expected = (scores[0] - 1.5 * counts / len(history)).log_softmax(-1)    # TGI: penalty × count / tokens so far
    assert torch.allclose(full_logprobs(scores, SamplingParams(frequency_penalty=1.5), history), expected, atol=1e-12)
    boosted = full_logprobs(scores, SamplingParams(frequency_penalty=-1.0), history)
    assert boosted[3] > torch.log_softmax(scores[0], -1)[3]

    expected = (scores[0] - 0.7 * (counts > 0).double()).log_softmax(-1)     # presence: once per seen token
    assert torch.allclose(full_logprobs(scores, SamplingParams(presence_penalty=0.7), history), expected, atol=1e-12)


def test_greedy_is_argmax_and_top_k_1_is_greedy() -> None:
    scores = logits(rows=16, seed=3)
    sampler = Sampler()
    greedy = sampler.sample(scores, [SampleRow(SamplingParams(), [], 0) for _ in range(16)])
    assert greedy.token_ids == scores.argmax(-1).tolist()
    assert greedy.logprobs == pytest.approx(scores.log_softmax(-1).max(-1).values.tolist(), abs=1e-12)
    top1 = sampler.sample(scores, [SampleRow(SamplingParams(do_sample=True, top_k=1), [], s, seed=s)
                                   for s in range(16)])
    assert top1.token_ids == greedy.token_ids


def test_seeds_reproduce_and_differ() -> None:
    scores = logits().expand(64, V)
    sampler, params = Sampler(), SamplingParams(do_sample=True)
    a = sampler.sample(scores, [SampleRow(params, [], s, seed=42) for s in range(64)]).token_ids
    b = sampler.sample(scores, [SampleRow(params, [], s, seed=42) for s in range(64)]).token_ids
    c = sampler.sample(scores, [SampleRow(params, [], s, seed=43) for s in range(64)]).token_ids
    assert a == b and a != c
    assert len(set(a)) > 5                              # successive steps draw fresh uniforms
    assert uniform(42, 0) == uniform(42, 0) != uniform(42, 1)
    assert all(0.0 <= uniform(s, t) < 1.0 for s in range(20) for t in range(20))


def test_a_row_does_not_depend_on_its_batch_neighbours() -> None:
    scores = logits(rows=6, seed=5)
    mine = SamplingParams(temperature=0.8, top_p=0.9, repetition_penalty=1.2, top_n_tokens=3, seed=9)
    history = [1, 2, 3]
    sampler = Sampler()
    for step in range(30):
        alone = sampler.sample(scores[2:3], [SampleRow(mine, history, step, seed=9)])
        others = [SampleRow(SamplingParams(top_k=3, temperature=2.0), [4], step, seed=1),
                  SampleRow(SamplingParams(), [], step),
                  SampleRow(mine, history, step, seed=9),
                  SampleRow(SamplingParams(typical_p=0.5, frequency_penalty=2.0), [2, 2], step, seed=step),
                  SampleRow(SamplingParams(repetition_penalty=3.0, presence_penalty=1.0), [0, 1, 2, 3], step),
                  SampleRow(SamplingParams(do_sample=True), [], step, seed=2)]
        batch = sampler.sample(scores, others)
        assert batch.token_ids[2] == alone.token_ids[0]
        assert batch.logprobs[2] == alone.logprobs[0]
        assert batch.top_tokens[2] == alone.top_tokens[0] and len(alone.top_tokens[0]) == 3
        assert batch.top_tokens[1] == []


def test_float32_logits_and_chosen_logprob() -> None:
    scores = logits(rows=4).float()
    res = Sampler().sample(scores, [SampleRow(SamplingParams(do_sample=True, top_n_tokens=2), [], 0, seed=s)
                                    for s in range(4)])
    lp = scores.log_softmax(-1)
    for row, (tok, value) in enumerate(zip(res.token_ids, res.logprobs, strict=True)):
        assert value == pytest.approx(float(lp[row, tok]), abs=1e-6)
        assert res.top_tokens[row][0][0] == int(scores[row].argmax())


@pytest.mark.parametrize(("field", "value", "words"), [
    ("temperature", 0.0, "`temperature` must be strictly positive. Given: 0.0"),
    ("top_k", 0, "`top_k` must be strictly positive. Given: 0"),
    ("top_p", 1.0, "`top_p` must be > 0.0 and < 1.0. Given: 1.0"),
    ("typical_p", 0.0, "`typical_p` must be > 0.0 and < 1.0. Given: 0.0"),
    ("repetition_penalty", -1.0, "`repetition_penalty` must be strictly positive. Given: -1.0"),
    ("frequency_penalty", 2.5, "`frequency_penalty` must be >= -2.0 and <= 2.0. Given: 2.5"),
    ("presence_penalty", -3, "`presence_penalty` must be >= -2.0 and <= 2.0. Given: -3"),
    ("max_new_tokens", 0, "`max_new_tokens` must be strictly positive. Given: 0"),
    ("seed", -1, "`seed` must be an unsigned 64-bit integer"),
    ("stop", [""], "`stop` must be a list of non-empty strings"),
])
def test_validation_names_field_limit_and_value(field: str, value: object, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        SamplingParams(**{field: value})
    assert words in str(err.value)


def test_sampling_follows_tgi() -> None:
    assert not SamplingParams().sampling
    assert not SamplingParams(temperature=1.0, repetition_penalty=1.3).sampling
    assert SamplingParams(temperature=0.2).sampling and SamplingParams(top_p=0.95).sampling
    assert SamplingParams(do_sample=True).sampling and SamplingParams(top_k=10).sampling
    assert SamplingParams(stop=["\n"]).stop == ("\n",)

"""The sampler's watermark and OpenAI penalties: per row, in one mixed batch, as their definitions say."""

from __future__ import annotations

import torch

from codefoundry.generate import SamplingParams
from codefoundry.generate.sampler import Sampler, SampleRow

V = 300


def green_list(prev: int) -> set[int]:
    """Kirchenbauer et al.'s green list as TGI seeds it: randperm(V) under seed 15485863 * previous token."""
    generator = torch.Generator().manual_seed(15485863 * prev)
    return set(torch.randperm(V, generator=generator)[:V // 2].tolist())


def test_mixed_batch_applies_each_rows_own_processors():
    torch.manual_seed(0)
    logits = torch.randn(4, V)
    history = [5, 7, 7, 9, 7]                     # 2 prompt tokens, 3 generated
    rows = [SampleRow(SamplingParams(), history, 3),
            SampleRow(SamplingParams(watermark=True), history, 3),
            SampleRow(SamplingParams(frequency_penalty=1.0, presence_penalty=0.5, openai_penalties=True), history, 3),
            SampleRow(SamplingParams(frequency_penalty=1.0), history, 3)]
    got = Sampler().sample(logits, rows)

    assert got.token_ids[0] == int(logits[0].argmax())
    assert got.token_ids[0] == Sampler().sample(logits[:1], rows[:1]).token_ids[0]   # its neighbours change nothing

    bias = torch.tensor([2.0 if j in green_list(history[-1]) else 0.0 for j in range(V)])
    assert got.token_ids[1] == int((logits[1] + bias).argmax())

    openai = logits[2].clone()                    # generated [7, 9, 7]: counts 7→2, 9→1; the prompt's 5 is not counted
    openai[7] -= 1.0 * 2 + 0.5
    openai[9] -= 1.0 * 1 + 0.5
    assert got.token_ids[2] == int(openai.argmax())
    assert got.logprobs[2] == torch.log_softmax(openai, -1)[got.token_ids[2]].item()

    tgi = logits[3].clone()                       # TGI: count over all 5 tokens / 5
    for token, count in {5: 1, 7: 3, 9: 1}.items():
        tgi[token] -= 1.0 * count / 5
    assert got.token_ids[3] == int(tgi.argmax())


def test_openai_penalties_do_nothing_before_the_first_generated_token():
    logits = torch.zeros(1, V)
    logits[0, 4] = 1.0                            # the prompt's token is the best: OpenAI's penalties ignore the prompt
    row = SampleRow(SamplingParams(frequency_penalty=2.0, presence_penalty=2.0, openai_penalties=True), [4, 4], 0)
    assert Sampler().sample(logits, [row]).token_ids == [4]

"""The paged forward (chunked prefill + decode, many sequences in one flat batch) equals the training forward."""

from __future__ import annotations

import random

import pytest
import torch

from codefoundry.model import (
    GPTBigCodeForCausalLM,
    PagedAttention,
    allocate_kv_cache,
    kv_cache_bytes_per_block,
    preset,
)

BLOCK = 4


class Sequence:
    """One sequence's tokens and its (randomly chosen) cache blocks."""

    def __init__(self, ids: list[int], blocks: list[int]) -> None:
        self.ids, self.blocks, self.done = ids, blocks, 0


def _step(model, caches, seqs: list[Sequence], chunks: list[int], max_blocks: int) -> torch.Tensor:
    ids, positions, slots, q_lens, ctx_lens = [], [], [], [], []
    for seq, n in zip(seqs, chunks, strict=True):
        for p in range(seq.done, seq.done + n):
            ids.append(seq.ids[p])
            positions.append(p)
            slots.append(seq.blocks[p // BLOCK] * BLOCK + p % BLOCK)
        seq.done += n
        q_lens.append(n)
        ctx_lens.append(seq.done)
    tables = torch.tensor([s.blocks + [0] * (max_blocks - len(s.blocks)) for s in seqs])
    attn = PagedAttention(q_lens, ctx_lens, tables, torch.tensor(slots),
                          torch.arange(len(ids)), BLOCK)      # logits for every new token
    return model.forward_paged(torch.tensor(ids), torch.tensor(positions), attn, caches)


@pytest.mark.parametrize("multi_query", [True, False], ids=["mqa", "mha"])
def test_paged_equals_training_forward(multi_query: bool) -> None:
    torch.manual_seed(0)
    rng = random.Random(0)
    config = preset("tiny", vocab_size=300).replace(multi_query=multi_query)
    model = GPTBigCodeForCausalLM(config).double().eval()
    lengths = [23, 9, 17, 1]
    max_blocks = max(-(-n // BLOCK) for n in lengths)
    free = list(range(1, 64))
    rng.shuffle(free)                                         # non-contiguous, unordered blocks
    seqs = [Sequence([rng.randrange(300) for _ in range(n)], [free.pop() for _ in range(-(-n // BLOCK))])
            for n in lengths]
    caches = allocate_kv_cache(config, num_blocks=64, block_size=BLOCK, dtype=torch.float64)
    got: list[list[torch.Tensor]] = [[] for _ in seqs]
    with torch.no_grad():
        while any(s.done < len(s.ids) for s in seqs):
            active = [i for i, s in enumerate(seqs) if s.done < len(s.ids)]
            # prefill in chunks of 1-7 tokens, then (as sequences run short) single-token decode steps
            chunks = [min(rng.randint(1, 7), len(seqs[i].ids) - seqs[i].done) for i in active]
            logits = _step(model, caches, [seqs[i] for i in active], chunks, max_blocks)
            for i, rows in zip(active, logits.split(chunks), strict=True):
                got[i].extend(rows)
        for seq, rows in zip(seqs, got, strict=True):
            expected = model(torch.tensor([seq.ids]))[0]
            assert (torch.stack(rows) - expected).abs().max().item() <= 1e-9


def test_logits_indices_select_rows_and_cache_shape() -> None:
    torch.manual_seed(0)
    config = preset("tiny", vocab_size=100)
    model = GPTBigCodeForCausalLM(config).eval()
    caches = allocate_kv_cache(config, num_blocks=8, block_size=BLOCK)
    assert len(caches) == config.n_layer
    assert caches[0].shape == (8, 2, BLOCK, 1, config.head_dim)
    assert kv_cache_bytes_per_block(config, BLOCK, torch.float32) == caches[0][0].numel() * 4 * config.n_layer
    ids = torch.tensor([5, 6, 7, 8, 9])
    attn = PagedAttention([3, 2], [3, 2], torch.tensor([[2], [5]]), torch.tensor([8, 9, 10, 20, 21]),
                          torch.tensor([2, 4]), BLOCK)
    with torch.no_grad():
        logits = model.forward_paged(ids, torch.tensor([0, 1, 2, 0, 1]), attn, caches)
        full = model(torch.tensor([[5, 6, 7]]))[0, -1], model(torch.tensor([[8, 9]]))[0, -1]
    assert logits.shape == (2, config.vocab_size)
    assert torch.allclose(logits[0], full[0], atol=1e-5) and torch.allclose(logits[1], full[1], atol=1e-5)


def test_bad_paged_attention_is_rejected() -> None:
    with pytest.raises(ValueError, match="query_len"):
        PagedAttention([3], [2], torch.zeros(1, 1, dtype=torch.long), torch.zeros(3, dtype=torch.long),
                       torch.tensor([2]), BLOCK)
    with pytest.raises(ValueError, match="needs 2 blocks"):
        PagedAttention([5], [5], torch.zeros(1, 1, dtype=torch.long), torch.zeros(5, dtype=torch.long),
                       torch.tensor([4]), BLOCK)


@pytest.mark.parametrize("multi_query", [True, False], ids=["mqa", "mha"])
def test_pure_decode_steps_equal_training_forward(multi_query: bool) -> None:
    """Steps where every sequence decodes one token (the folded-heads path), with equal and unequal contexts."""
    torch.manual_seed(1)
    rng = random.Random(1)
    config = preset("tiny", vocab_size=300).replace(multi_query=multi_query)
    model = GPTBigCodeForCausalLM(config).double().eval()
    prompts, decode_steps = [13, 2, 7, 13], 6
    lengths = [n + decode_steps + 1 for n in prompts]
    max_blocks = max(-(-n // BLOCK) for n in lengths)
    free = list(range(1, 64))
    rng.shuffle(free)
    seqs = [Sequence([rng.randrange(300) for _ in range(n)], [free.pop() for _ in range(-(-n // BLOCK))])
            for n in lengths]
    caches = allocate_kv_cache(config, num_blocks=64, block_size=BLOCK, dtype=torch.float64)
    def check(step_seqs: list[Sequence]) -> None:
        logits = _step(model, caches, step_seqs, [1] * len(step_seqs), max_blocks)
        for seq, row in zip(step_seqs, logits, strict=True):
            expected = model(torch.tensor([seq.ids[:seq.done]]))[0, -1]
            assert (row - expected).abs().max().item() <= 1e-9

    with torch.no_grad():
        _step(model, caches, seqs, prompts, max_blocks)                       # whole prompts, no past
        for _ in range(decode_steps):
            check(seqs)                                                        # contexts differ: padded keys
        assert seqs[0].done == seqs[3].done
        check([seqs[0], seqs[3]])                                              # equal contexts: no mask

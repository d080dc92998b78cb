"""Cutting a padded batch into length groups (finetune/pieces.py) changes no loss and no gradient."""

from __future__ import annotations

import pytest
import torch

from codefoundry.finetune import LoraSettings
from codefoundry.finetune.lora import add_lora
from codefoundry.finetune.pieces import plan_groups, split_batch, used_lengths
from codefoundry.model import LlamaConfig, LlamaForCausalLM

IGNORE = -100


def ragged_batch(lengths: list[int], learned: int, vocab: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the given lengths padded right; each learns its last `learned` tokens (a hole's middle + EOS)."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    x = torch.zeros(len(lengths), width, dtype=torch.long)
    y = torch.full((len(lengths), width), IGNORE, dtype=torch.long)
    for row, n in enumerate(lengths):
        x[row, :n] = torch.randint(1, vocab, (n,), generator=g)
        y[row, n - learned:n] = torch.randint(1, vocab, (learned,), generator=g)
    return x, y


def test_used_lengths_and_groups() -> None:
    _, y = ragged_batch([5, 40, 7, 38], learned=2)
    assert used_lengths(y).tolist() == [5, 40, 7, 38]
    # two short and two long rows: two groups beat one (2·7 + 2·40 + 2 forwards < 4·40 + 1 forward)
    assert sorted(map(sorted, plan_groups([5, 40, 7, 38], cost=10))) == [[0, 2], [1, 3]]
    assert plan_groups([5, 40, 7, 38], cost=1000) == [[0, 2, 3, 1]]         # a forward costs more than padding
    assert plan_groups([9, 9, 9], cost=0) in ([[0], [1], [2]], [[0, 1, 2]], [[0], [1, 2]], [[0, 1], [2]])


@pytest.mark.parametrize("cost", [0, 16, 10_000])
def test_pieces_give_the_batch_loss_and_gradients(cost: int) -> None:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = add_lora(LlamaForCausalLM(config).double(), LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():                                   # B ≠ 0, so the adapter is part of the function
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    x, y = ragged_batch([6, 30, 9, 27, 4], learned=3)
    y[1, 10] = 7                                            # a label before the end of a row counts too

    def grads() -> dict[str, torch.Tensor]:
        out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return out

    whole = model(x, labels=y)
    whole.backward()
    expected = grads()
    pieces = split_batch(x, y, cost=cost)
    assert sum(p.labels for p in pieces) == int((y != IGNORE).sum()) and abs(sum(p.weight for p in pieces) - 1) < 1e-12
    assert sum(p.x.numel() for p in pieces) <= x.numel()
    if cost == 0:
        assert len(pieces) > 1 and sum(p.x.numel() for p in pieces) == 6 + 30 + 9 + 27 + 4   # no padding left
    total = torch.zeros((), dtype=torch.float64)
    for p in pieces:
        loss = model(p.x, labels=p.y) * p.weight
        loss.backward()
        total += loss.detach()
    got = grads()
    assert abs(float(total - whole.detach())) <= 1e-12
    assert got.keys() == expected.keys() and len(got) == 8
    for name, g in got.items():
        assert torch.allclose(g, expected[name], rtol=1e-10, atol=1e-13), name


def test_a_batch_without_labels_is_one_piece() -> None:
    x = torch.ones(2, 5, dtype=torch.long)
    y = torch.full((2, 5), IGNORE)
    [piece] = split_batch(x, y)
    assert piece.labels == 0 and piece.x.shape == (2, 5)

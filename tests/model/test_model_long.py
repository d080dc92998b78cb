"""The `long` preset trains on one 8,192-token sequence with memory-efficient attention."""

from __future__ import annotations

import resource

import pytest
import torch

from codefoundry.model import GPTBigCodeForCausalLM, preset


@pytest.mark.slow
def test_long_preset_forward_backward_on_8k_tokens() -> None:
    torch.manual_seed(0)
    model = GPTBigCodeForCausalLM(preset("long", vocab_size=512)).train()
    ids = torch.randint(0, 512, (1, 8193))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    loss = model(ids[:, :-1], labels=ids[:, 1:])
    loss.backward()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    score_matrices = model.config.n_layer * model.config.n_head * 8192 * 8192 * 4   # what eager attention keeps
    assert torch.isfinite(loss) and model.transformer.wpe.weight.grad[8191].abs().sum() > 0
    assert grown < score_matrices / 4, f"peak grew {grown / 2**20:.0f} MiB"

"""The fused head + cross-entropy equals F.cross_entropy(x @ Wᵀ) in value and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from codefoundry.model import GPTBigCodeForCausalLM, preset
from codefoundry.model.loss import linear_cross_entropy


@pytest.mark.parametrize("chunk_rows", [7, 64, 1000])
def test_fused_loss_and_grads_match_cross_entropy(chunk_rows: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(150, 24, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(90, 24, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, 90, (150,), generator=g)
    labels[::5] = -100
    loss = linear_cross_entropy(x, w, labels, chunk_rows=chunk_rows)
    grad_x, grad_w = torch.autograd.grad(loss * 3.0, (x, w))
    ref = F.cross_entropy(x @ w.t(), labels)
    ref_x, ref_w = torch.autograd.grad(ref * 3.0, (x, w))
    assert abs(loss.item() - ref.item()) <= 1e-12
    assert (grad_x - ref_x).abs().max() <= 1e-12 and (grad_w - ref_w).abs().max() <= 1e-12
    with torch.no_grad():                                  # the loss alone, no gradient work
        assert abs(linear_cross_entropy(x, w, labels, chunk_rows=chunk_rows).item() - ref.item()) <= 1e-12


@pytest.mark.parametrize("trainable", ["x", "w"])
def test_only_the_needed_gradient_is_made(trainable: str) -> None:
    """A frozen head (LoRA) or frozen inputs: the gradient that is asked for is exact on its own."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 8, dtype=torch.float64, generator=g, requires_grad=trainable == "x")
    w = torch.randn(30, 8, dtype=torch.float64, generator=g, requires_grad=trainable == "w")
    labels = torch.randint(0, 30, (40,), generator=g)
    leaf = x if trainable == "x" else w
    (grad,) = torch.autograd.grad(linear_cross_entropy(x, w, labels, chunk_rows=16), leaf)
    (ref,) = torch.autograd.grad(F.cross_entropy(x @ w.t(), labels), leaf)
    assert (grad - ref).abs().max() <= 1e-12


def test_fused_loss_edge_cases() -> None:
    """Large logits stay finite (max-shifted exp); no labels at all gives nan, as F.cross_entropy does."""
    x = torch.tensor([[300.0, 0.0], [0.0, -300.0]], dtype=torch.float64, requires_grad=True)
    w = torch.eye(2, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, 0])
    loss = linear_cross_entropy(x, w, labels)
    assert abs(loss.item() - F.cross_entropy(x @ w.t(), labels).item()) <= 1e-12
    loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all()
    assert torch.isnan(linear_cross_entropy(x, w, torch.tensor([-100, -100])))


def test_fused_loss_under_cpu_autocast_accumulates_in_float32() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 16, generator=g, requires_grad=True)
    w = torch.randn(40, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 40, (64,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(x, w, labels, chunk_rows=16)
        ref = F.cross_entropy((x @ w.t()).float(), labels)
    loss.backward()
    assert loss.dtype == torch.float32 and x.grad.dtype == w.grad.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 1e-3


def test_model_grads_match_unfused_head() -> None:
    """Through the whole model, including the tied embedding's two gradient paths."""
    torch.manual_seed(0)
    model = GPTBigCodeForCausalLM(preset("tiny", vocab_size=200)).double()
    ids = torch.randint(0, 200, (2, 17))
    labels = torch.randint(0, 200, (2, 17))
    labels[0, :4] = -100
    loss = model(ids, labels=labels)
    fused = torch.autograd.grad(loss, list(model.parameters()))
    plain = F.cross_entropy(model(ids).view(-1, model.config.vocab_size), labels.view(-1))
    unfused = torch.autograd.grad(plain, list(model.parameters()))
    assert abs(loss.item() - plain.item()) <= 1e-12 and loss.dim() == 0
    assert max((a - b).abs().max().item() for a, b in zip(fused, unfused, strict=True)) <= 1e-12


def test_causal_lm_loss_runs_the_head_only_on_labelled_rows() -> None:
    from codefoundry.model.loss import causal_lm_loss

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 11, 16, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(40, 16, dtype=torch.float64, generator=g)
    labels = torch.full((3, 11), -100)
    labels[0, 8:] = torch.tensor([1, 2, 3])
    labels[2, 4] = 39                                  # rows 1: nothing learned
    expected = torch.nn.functional.cross_entropy((hidden @ weight.t()).flatten(0, 1), labels.flatten())
    (want,) = torch.autograd.grad(expected, hidden)
    got = causal_lm_loss(hidden, weight, labels)
    (have,) = torch.autograd.grad(got, hidden)
    assert abs(float(got - expected)) < 1e-12 and torch.allclose(have, want, atol=1e-14)
    assert have[1].abs().max() == 0                    # no gradient where no label is

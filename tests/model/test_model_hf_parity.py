"""Our GPTBigCode and transformers' agree: what we save opens there, what transformers saves opens here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from codefoundry.model import GPTBigCodeForCausalLM, load_model, preset, save_pretrained


def _ids(vocab: int, shape: tuple[int, int] = (2, 33), seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("multi_query", [True, False], ids=["mqa", "mha"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)], ids=["f64", "f32"])
def test_ours_opens_in_transformers(tmp_path: Path, multi_query: bool, dtype: torch.dtype, tol: float) -> None:
    torch.manual_seed(0)
    config = preset("tiny", vocab_size=500).replace(multi_query=multi_query)
    ours = GPTBigCodeForCausalLM(config).to(dtype).eval()
    save_pretrained(ours, tmp_path / "model")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "model", dtype=dtype, attn_implementation="sdpa").eval()
    assert type(theirs).__name__ == "GPTBigCodeForCausalLM" and theirs.config.multi_query == multi_query
    ids = _ids(config.vocab_size)
    with torch.no_grad():
        diff = (ours(ids) - theirs(ids).logits).abs().max().item()
    assert diff <= tol


@pytest.mark.parametrize("multi_query", [True, False], ids=["mqa", "mha"])
def test_transformers_checkpoint_opens_in_ours(tmp_path: Path, multi_query: bool) -> None:
    torch.manual_seed(0)
    hf_config = transformers.GPTBigCodeConfig(vocab_size=320, n_positions=64, n_embd=48, n_layer=3, n_head=6,
                                              multi_query=multi_query, bos_token_id=0, eos_token_id=0)
    theirs = transformers.GPTBigCodeForCausalLM(hf_config).double().eval()
    with torch.no_grad():                                   # non-trivial LayerNorms and biases
        for name, p in theirs.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    theirs.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf", dtype=torch.float64)
    assert ours.config.multi_query == multi_query and ours.config.num_kv_heads == (1 if multi_query else 6)
    assert ours.lm_head.weight is ours.transformer.wte.weight
    ids = _ids(320, (3, 40))
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max().item() <= 1e-9


def test_loss_matches_transformers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ours = GPTBigCodeForCausalLM(preset("tiny", vocab_size=256)).double()
    save_pretrained(ours, tmp_path / "m")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float64)
    ids = _ids(256, (2, 20))
    labels = ids.clone()
    labels[0, :5] = -100
    loss = ours(ids[:, :-1], labels=labels[:, 1:])          # ours takes aligned labels; transformers shifts
    out = theirs(ids, labels=labels)
    exact = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 256), labels[:, 1:].reshape(-1))
    assert abs(loss.item() - exact.item()) <= 1e-9
    assert abs(loss.item() - out.loss.item()) <= 1e-5        # transformers computes its loss in float32

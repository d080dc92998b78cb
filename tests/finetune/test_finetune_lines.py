"""Line-level FIM examples: the token layout (PSM and SPM), the loss mask (middle + EOS only), the windows,
the holes (whole non-blank lines), determinism, and a fine-tune on a curated dataset/ with them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_finetune_lora import make_base

from codefoundry.cli import run
from codefoundry.finetune.data import IGNORE, ExampleBatches
from codefoundry.finetune.lines import FimIds, LineFimSettings, build_examples, cut_hole, line_fim_example
from codefoundry.tokenizer import load_tokenizer

TEXT = ("import os\n\n\ndef area(w, h):\n    \"\"\"The area.\"\"\"\n    result = w * h\n    return result\n\n\n"
        "def perimeter(w, h):\n    return 2 * (w + h)\n")


def _rng(seed: int) -> np.random.RandomState:
    return np.random.RandomState(seed)


def _split(example, ids: FimIds) -> tuple[list[int], list[int]]:
    """(prompt ids, learned ids) of an example."""
    tokens = example.ids.tolist()
    return tokens[:example.n_prompt], tokens[example.n_prompt:]


@pytest.fixture(scope="module")
def tok(train_tokenizer_dir: Path):
    return load_tokenizer(train_tokenizer_dir)


def test_psm_layout_and_only_the_middle_and_eos_are_learned(tok) -> None:
    ids = FimIds.from_tokenizer(tok)
    settings = LineFimSettings(spm_rate=0.0, max_lines=1)
    for seed in range(20):
        prefix, middle, suffix = cut_hole(TEXT, _rng(seed), 1)
        example = line_fim_example(TEXT, _rng(seed), tok, ids, settings)
        enc = lambda s: tok.encode(s, add_special_tokens=False)   # noqa: E731
        assert prefix + middle + suffix == TEXT and middle.count("\n") == 1 and middle.strip()
        assert middle in TEXT.splitlines(keepends=True)                       # one whole line of the file
        prompt, learned = _split(example, ids)
        assert prompt == [ids.prefix, *enc(prefix), ids.suffix, *enc(suffix), ids.middle]
        assert learned == [*enc(middle), ids.eos] and ids.eos == tok.eos_token_id
        # the batch: inputs shifted against labels; every target before the middle ignored, the middle and EOS kept
        batch = ExampleBatches([example], seed=0, pad_id=0, shuffle=False).batch([0])
        labels = batch.y[0].tolist()
        assert labels[:len(prompt) - 1] == [IGNORE] * (len(prompt) - 1)
        assert labels[len(prompt) - 1:] == learned
        assert batch.x[0].tolist() == example.ids[:-1].tolist()


def test_spm_puts_the_prefix_after_fim_middle_unlearned(tok) -> None:
    ids = FimIds.from_tokenizer(tok)
    enc = lambda s: tok.encode(s, add_special_tokens=False)   # noqa: E731
    prefix, middle, suffix = cut_hole(TEXT, _rng(3), 2)
    example = line_fim_example(TEXT, _rng(3), tok, ids, LineFimSettings(spm_rate=1.0, max_lines=2))
    prompt, learned = _split(example, ids)
    assert prompt == [ids.prefix, ids.suffix, *enc(suffix), ids.middle, *enc(prefix)]
    assert learned == [*enc(middle), ids.eos]


def test_windows_keep_the_tokens_next_to_the_hole(tok) -> None:
    ids = FimIds.from_tokenizer(tok)
    text = "".join(f"value_{i} = compute({i}, {i * 7})\n" for i in range(200))
    settings = LineFimSettings(max_prefix_tokens=24, max_suffix_tokens=10, spm_rate=0.0, max_lines=1)
    for seed in range(10):
        prefix, _, suffix = cut_hole(text, _rng(seed), 1)
        example = line_fim_example(text, _rng(seed), tok, ids, settings)
        prompt, _ = _split(example, ids)
        cut = prompt.index(ids.suffix)
        p, s = prompt[1:cut], prompt[cut + 1:-1]
        assert len(p) <= 24 and len(s) <= 10
        if prefix:
            assert prefix.endswith(tok.decode(p))                      # the prefix's end, next to the hole
        if suffix:
            assert suffix.startswith(tok.decode(s))                    # the suffix's start
    fitted = LineFimSettings().fitted(64)                               # every example fits a 64-token sequence
    assert fitted.max_prefix_tokens + fitted.max_suffix_tokens + fitted.max_middle_tokens + 4 <= 65
    assert LineFimSettings().fitted(4096) == LineFimSettings()
    examples = build_examples([text, TEXT * 20], tok, fitted, seed=1)
    assert examples and max(len(e.ids) for e in examples) <= 65


def test_holes_are_whole_non_blank_lines_and_examples_repeat_with_the_seed(tok) -> None:
    assert cut_hole("\n   \n\t\n", _rng(0), 3) is None
    assert line_fim_example("\n\n", _rng(0), tok, FimIds.from_tokenizer(tok), LineFimSettings()) is None
    sizes = set()
    for seed in range(60):
        _, middle, _ = cut_hole(TEXT, _rng(seed), 3)
        assert middle.splitlines()[0].strip() and middle.endswith("\n")
        sizes.add(len(middle.splitlines()))
    assert sizes == {1, 2, 3}                                           # one line, and the multi-line holes
    long_line = "x = [" + ", ".join(str(i) for i in range(400)) + "]\n"
    assert line_fim_example(long_line, _rng(0), tok, FimIds.from_tokenizer(tok),
                            LineFimSettings(max_middle_tokens=32)) is None   # a hole too long to learn from
    docs = [TEXT, TEXT.upper(), "\n"]
    first, again = (build_examples(docs, tok, LineFimSettings(), seed=5) for _ in range(2))
    assert len(first) == 2 and all(np.array_equal(a.ids, b.ids) for a, b in zip(first, again, strict=True))
    other = build_examples(docs, tok, LineFimSettings(), seed=6)
    assert any(not np.array_equal(a.ids, b.ids) for a, b in zip(first, other, strict=True))


def test_finetune_on_line_fim_requests_from_a_dataset(tmp_path: Path, train_dataset_dir: Path,
                                                      train_tokenizer_dir: Path) -> None:
    base = make_base("gpt_bigcode", train_tokenizer_dir, tmp_path / "base")
    out = tmp_path / "adapters" / "fim"
    assert run(["finetune", "--model", str(base), "--data", str(train_dataset_dir), "--out", str(out),
                "--fim-holes", "lines", "--max-steps", "2", "--lora-r", "2", "--seq-len", "64",
                "--micro-batch-size", "2", "--device", "cpu"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    training, data = manifest["extra"]["training"], manifest["extra"]["data"]
    assert training["fim_rate"] == 1.0 and training["steps"] == 2 and training["tokens"] > 0
    assert data["format"] == "dataset-fim-lines" and data["train_sequences"] > 0 and data["validation_sequences"] > 0
    assert manifest["config"]["data"]["fim_holes"] == "lines"
    assert set(manifest["inputs"]) == {"model", "dataset"}
    assert not (out / "tokens").exists()                               # nothing packed: the windows are cut from text


def test_below_fim_rate_one_a_request_is_its_left_to_right_twin(tok) -> None:
    ids = FimIds.from_tokenizer(tok)
    enc = lambda s: tok.encode(s, add_special_tokens=False)   # noqa: E731
    kinds = set()
    for seed in range(40):
        prefix, middle, suffix = cut_hole(TEXT, _rng(seed), 1)
        fim_only = line_fim_example(TEXT, _rng(seed), tok, ids, LineFimSettings(spm_rate=0.0, max_lines=1))
        mixed = line_fim_example(TEXT, _rng(seed), tok, ids,
                                 LineFimSettings(spm_rate=0.0, max_lines=1, fim_rate=0.5))
        prompt, learned = _split(mixed, ids)
        if ids.middle in prompt:                                   # a FIM request, as at rate 1
            assert mixed.ids.tolist() == fim_only.ids.tolist()
            kinds.add("fim")
        else:                                                      # prefix, then the hole and suffix learned, no EOS
            assert prefix and prompt == enc(prefix) and learned == [*enc(middle), *enc(suffix)]
            assert ids.eos not in learned
            kinds.add("left-to-right")
    assert kinds == {"fim", "left-to-right"}


def test_trained_fim_token_rows_are_saved_and_every_consumer_applies_them(tmp_path: Path, train_dataset_dir: Path,
                                                                         train_tokenizer_dir: Path) -> None:
    import torch
    import transformers
    from peft import PeftModel
    from safetensors.torch import load_file

    from codefoundry.finetune import FinetuneConfig, FinetuneDataSettings, LoraSettings, finetune, merge, open_adapter
    from codefoundry.model import load_model

    base = make_base("gpt_bigcode", train_tokenizer_dir, tmp_path / "base")        # LM head tied to wte
    tokens = ["<fim_prefix>", "<fim_middle>", "<fim_suffix>"]
    config = FinetuneConfig(lora=LoraSettings(r=2, alpha=4, dropout=0.0, trainable_tokens=tokens),
                            data=FinetuneDataSettings(fim_holes="lines", fim_spm_rate=0.0), seq_len=64,
                            micro_batch_size=2, grad_accum=1, max_steps=3, lr=5e-2, device="cpu", precision="fp32")
    adapter = finetune(base, train_dataset_dir, tmp_path / "adapter", config)

    ids = sorted(load_tokenizer(base).convert_tokens_to_ids(t) for t in tokens)
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    rows = saved["base_model.model.transformer.wte.token_adapter.trainable_tokens_delta"]
    assert rows.shape[0] == 3 and not any("wte.weight" in k or "lm_head" in k for k in saved)   # rows, not the matrix
    before = load_model(base).transformer.wte.weight[ids]
    assert (rows - before).abs().max().item() > 1e-4                                          # they were trained
    assert json.loads((adapter / "adapter_config.json").read_text())["trainable_token_indices"] == {"wte": ids}
    assert "`<fim_middle>`" in (adapter / "README.md").read_text()

    prompt = torch.tensor([[ids[2], 40, 41, 42, ids[1], 43, 44, ids[0], 45]])
    hf = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float64).eval()
    with torch.no_grad():
        theirs = PeftModel.from_pretrained(hf, adapter).eval()(prompt).logits
        ours = open_adapter(load_model(base, dtype=torch.float64), adapter).eval()(prompt)
        merged = load_model(merge(base, adapter, tmp_path / "merged"), dtype=torch.float64)(prompt)
    assert (ours - theirs).abs().max().item() <= 1e-9
    assert (merged - theirs).abs().max().item() <= 1e-5                 # merged weights saved in float32
    assert torch.equal(load_model(tmp_path / "merged").lm_head.weight[ids], rows)   # tied head: the same rows

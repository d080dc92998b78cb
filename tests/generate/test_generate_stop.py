"""Stop rules: TGI's order, stop strings across token boundaries, cutting, end to end through generate()."""

from __future__ import annotations

from pathlib import Path

import torch

from codefoundry.generate import FinishReason, SamplingParams, StopChecker, generate
from codefoundry.model import load_model
from codefoundry.tokenizer import load_tokenizer


def test_stop_split_across_tokens_is_found() -> None:
    stop = StopChecker(max_new_tokens=10, stop=["Paris"])
    assert stop.check(5, "The capital is Pa") is None
    hit = stop.check(6, "ris, of course")
    assert hit is not None and hit.reason is FinishReason.STOP_SEQUENCE and hit.stop_sequence == "Paris"
    assert "ris, of course"[:hit.keep_chars] == "ris"


def test_stop_spread_over_many_tokens_and_empty_deltas() -> None:
    stop = StopChecker(max_new_tokens=20, stop=["\nclass ", "\ndef "])
    for i, piece in enumerate(["x = 1", "\n", "", "d", "e"]):
        assert stop.check(i, piece) is None
    hit = stop.check(9, "f foo():")
    assert hit is not None and hit.stop_sequence == "\ndef " and hit.keep_chars == 2


def test_earliest_stop_wins_inside_one_token() -> None:
    stop = StopChecker(max_new_tokens=5, stop=["bb", "ab"])
    hit = stop.check(1, "xabbbb")
    assert hit is not None and hit.stop_sequence == "ab" and hit.keep_chars == 3


def test_a_stop_in_earlier_text_is_not_matched_twice() -> None:
    stop = StopChecker(max_new_tokens=5, stop=["abc"])
    assert stop.check(1, "ab") is None
    assert stop.check(2, "x") is None
    assert stop.check(3, "abc") is not None


def test_order_is_length_then_eos_then_stop() -> None:
    stop = StopChecker(max_new_tokens=2, stop=["!"], eos_token_ids=[0])
    assert stop.check(0, "!").reason is FinishReason.EOS_TOKEN
    stop = StopChecker(max_new_tokens=1, stop=["!"], eos_token_ids=[0])
    assert stop.check(0, "!").reason is FinishReason.LENGTH
    stop = StopChecker(max_new_tokens=3, stop=["!"], eos_token_ids=[0], ignore_eos=True)
    assert stop.check(0, "") is None
    assert stop.check(0, "!").reason is FinishReason.STOP_SEQUENCE


def test_stop_sequence_through_generate(peaky_model_dir: Path) -> None:
    """A stop string that straddles a token boundary in the model's own output cuts the text right after it."""
    tokenizer = load_tokenizer(peaky_model_dir)
    model = load_model(peaky_model_dir, dtype=torch.float64)
    prompt = "def fibonacci(n):\n"
    free = generate(model, tokenizer, [prompt], SamplingParams(max_new_tokens=40, ignore_eos=True))[0]
    pieces = [t.text for t in free.tokens]
    boundary = len(pieces[0]) + len(pieces[1]) + len(pieces[2])         # a token boundary well inside the text
    stop_string = free.text[boundary - 2:boundary + 2]
    assert len(stop_string) == 4 and "\ufffd" not in stop_string

    [c] = generate(model, tokenizer, [prompt], SamplingParams(max_new_tokens=40, ignore_eos=True,
                                                               stop=["@@never@@", stop_string]))
    end = free.text.index(stop_string) + len(stop_string)
    assert c.finish_reason is FinishReason.STOP_SEQUENCE and c.stop_sequence == stop_string
    assert c.text == free.text[:end] and c.text_before_stop == free.text[:end - 4]
    assert c.token_ids == free.token_ids[:c.generated_tokens] and c.generated_tokens < 40


def test_eos_ends_the_sequence(peaky_model_dir: Path) -> None:
    tokenizer = load_tokenizer(peaky_model_dir)
    model = load_model(peaky_model_dir, dtype=torch.float64)
    free = generate(model, tokenizer, ["import os\n"], SamplingParams(max_new_tokens=12, ignore_eos=True))[0]
    eos = free.token_ids[5]
    model.config = model.config.replace(eos_token_id=eos)                # pretend the 6th token is EOS
    c = generate(model, tokenizer, ["import os\n"], SamplingParams(max_new_tokens=12))[0]
    first = free.token_ids.index(eos)
    assert c.finish_reason is FinishReason.EOS_TOKEN and c.token_ids == free.token_ids[:first + 1]
    assert c.generated_tokens == first + 1
    again = generate(model, tokenizer, ["import os\n"], SamplingParams(max_new_tokens=12, ignore_eos=True))[0]
    assert again.token_ids == free.token_ids and again.finish_reason is FinishReason.LENGTH


def test_a_real_eos_is_reported_but_not_in_the_text(tiny_model_dir: Path) -> None:
    """Bias the final LayerNorm towards <|endoftext|>'s (tied) embedding so the model emits it at once."""
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir)
    eos = tokenizer.eos_token_id
    assert eos == 0 and eos in tokenizer.all_special_ids
    prompt = tokenizer.encode("x = ")
    [plain] = generate(model, tokenizer, [prompt], SamplingParams(max_new_tokens=2, ignore_eos=True))
    with torch.no_grad():
        model.transformer.ln_f.bias.copy_(model.transformer.wte.weight[eos] * 1000)
    forced = generate(model, tokenizer, [prompt], SamplingParams(max_new_tokens=5, details=True))[0]
    assert forced.finish_reason is FinishReason.EOS_TOKEN and forced.token_ids == [eos]
    assert forced.text == "" and forced.tokens[0].special and forced.tokens[0].text == "<|endoftext|>"
    assert plain.token_ids[0] != eos

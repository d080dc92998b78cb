"""Fine-tuning data: each format renders as documented, the prompt is masked, bad rows are counted by reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codefoundry.errors import UserError
from codefoundry.finetune import FinetuneConfig, FinetuneDataSettings
from codefoundry.finetune.data import IGNORE, jsonl_batches
from codefoundry.finetune.rows import Renderer
from codefoundry.tokenizer import load_tokenizer

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _config(**data) -> FinetuneConfig:
    return FinetuneConfig(seq_len=64, data=FinetuneDataSettings(validation_fraction=0.0, **data))


def test_bad_rows_are_skipped_and_counted(tmp_path: Path, train_tokenizer_dir: Path) -> None:
    tok = load_tokenizer(train_tokenizer_dir)
    good = {"instruction": "Add one.", "response": "def f(x):\n    return x + 1\n"}
    rows = [good, {"instruction": "No answer."}, {"instruction": "  ", "response": "x"}, "{not json",
            [1, 2], {"instruction": "Too long.", "response": "x = 1\n" * 200}, {"instruction": 3, "response": "x"},
            good, "", {"instruction": "Fine.", "response": "pass"}]
    train, _, report = jsonl_batches(_write(tmp_path / "rows.jsonl", rows), tok, _config())
    assert report.format == "instruction" and report.rows == 9 and report.kept == 3 and len(train) == 3
    assert dict(report.skipped) == {"missing_field:response": 1, "empty_field:instruction": 1, "invalid_json": 1,
                                    "not_an_object": 1, "too_long": 1, "wrong_type:instruction": 1}
    assert report.first_line["too_long"] == 6 and report.first_line["invalid_json"] == 4  # blank lines not rows
    assert "3 of 9 rows kept" in report.summary()


def test_a_file_without_usable_rows_is_one_error(tmp_path: Path, train_tokenizer_dir: Path) -> None:
    tok = load_tokenizer(train_tokenizer_dir)
    with pytest.raises(UserError, match=r"has no rows"):
        jsonl_batches(_write(tmp_path / "empty.jsonl", []), tok, _config())
    bad = _write(tmp_path / "bad.jsonl", [{"instruction": "x"}, {"instruction": "y", "response": ""}])
    with pytest.raises(UserError, match=r"no usable row \(0 of 2 rows kept; skipped: missing_field:response ×1 "
                                        r"\(first at line 1\), empty_field:response ×1 \(first at line 2\)\)"):
        jsonl_batches(bad, tok, _config())
    with pytest.raises(UserError, match="no row has the keys of a known format"):
        jsonl_batches(_write(tmp_path / "other.jsonl", [{"text": "hello"}]), tok, _config())


def test_prompt_tokens_are_masked_from_the_loss(tmp_path: Path, train_tokenizer_dir: Path) -> None:
    tok = load_tokenizer(train_tokenizer_dir)
    rows = _write(tmp_path / "rows.jsonl", [{"instruction": "Square it.", "response": "return x * x"},
                                            {"instruction": "A much longer instruction here.", "response": "pass"}])
    prompt = tok.encode("Question: Square it.\n\nAnswer: ", add_special_tokens=False)
    answer = [*tok.encode("return x * x", add_special_tokens=False), tok.eos_token_id]
    masked, _, _ = jsonl_batches(rows, tok, _config())
    b = masked.batch([0, 1]) if masked.example(0).n_prompt == len(prompt) else masked.batch([1, 0])
    n = len(prompt) + len(answer) - 1
    assert b.x[0, :n].tolist() == (prompt + answer)[:-1]
    assert b.y[0, :len(prompt) - 1].tolist() == [IGNORE] * (len(prompt) - 1)   # targets inside the prompt
    assert b.y[0, len(prompt) - 1:n].tolist() == answer                          # the answer and EOS are learned
    assert (b.y[0, n:] == IGNORE).all() and (b.x[0, n:] == tok.pad_token_id).all()  # right padding
    assert b.tokens == n + len(masked.example(1).ids) - 1
    unmasked, _, _ = jsonl_batches(rows, tok, _config(mask_prompt=False))
    u = unmasked.batch([0, 1]) if unmasked.example(0).ids.tolist() == prompt + answer else unmasked.batch([1, 0])
    assert u.y[0, :n].tolist() == (prompt + answer)[1:]


def test_chat_and_commit_rows(train_tokenizer_dir: Path) -> None:
    tok = load_tokenizer(train_tokenizer_dir)
    tok.chat_template = CHATML
    chat = Renderer("chat", tok).render({"messages": [{"role": "system", "content": "Be brief."},
                                                      {"role": "user", "content": "2+2?"},
                                                      {"role": "assistant", "content": "4"}]})
    assert chat.prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                           "<|im_start|>assistant\n") and chat.response == "4<|im_end|>\n" and not chat.eos
    for row, reason in (({"messages": [{"role": "user", "content": "hi"}]}, "last_message_not_assistant"),
                        ({"messages": "hi"}, "bad_messages"), ({}, "missing_field:messages")):
        with pytest.raises(ValueError, match=reason):
            Renderer("chat", tok).render(row)
    # instruction rows use the chat template when the model has one, StarCoder's prompt when asked
    assert Renderer("instruction", tok).render({"instruction": "hi", "response": "yo"}).prompt.endswith(
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert Renderer("instruction", tok, "plain").render({"instruction": "hi", "response": "yo"}).prompt == \
        "Question: hi\n\nAnswer: "
    commit = Renderer("commits", tok).render({"old_contents": "a = 1\n", "new_contents": "a = 2\n",
                                              "subject": "Bump a"})
    assert commit.prompt + commit.response == "<commit_before>a = 1\n<commit_msg>Bump a<commit_after>a = 2\n"
    assert commit.eos
    ids = tok.encode(commit.prompt, add_special_tokens=False)
    assert tok.convert_tokens_to_ids("<commit_msg>") in ids                   # StarCoder's special tokens
    tok.chat_template = None
    with pytest.raises(UserError, match="no chat template"):
        Renderer("chat", tok)

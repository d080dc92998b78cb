"""Chat through the model's own template: SmolLM2-135M-Instruct (real weights, ChatML) with the real `openai`
client, a template's own error, and the tiny model (no template) refusing chat. The TGI and OpenAI client calls
of test_serve_api run against SmolLM2 too (parametrized there)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from codefoundry.generate import SamplingParams, generate
from codefoundry.model import load_model
from codefoundry.tokenizer import load_tokenizer
from fixtures_serve import SERVE_API_KEY

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}"}
MESSAGES = [{"role": "system", "content": "You are a helpful coding assistant."},
            {"role": "user", "content": "Write a Python function that adds two numbers."}]
NEW_TOKENS = 12


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=SERVE_API_KEY)


def test_smollm2_chat_replies_are_greedy_generation_on_its_template(smollm2_server, smollm2_dir: Path) -> None:
    tokenizer = load_tokenizer(smollm2_dir)
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    expected = generate(load_model(smollm2_dir), tokenizer, [prompt], SamplingParams(max_new_tokens=NEW_TOKENS))[0]

    chat = client(smollm2_server).chat.completions.create(model="smollm2", messages=MESSAGES,
                                                          max_tokens=NEW_TOKENS, temperature=0)
    assert chat.usage.prompt_tokens == len(tokenizer.encode(prompt)) == len(expected.prompt_token_ids)
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == expected.text and "def " in expected.text
    assert chat.usage.completion_tokens == NEW_TOKENS and chat.choices[0].finish_reason == "length"

    stream = client(smollm2_server).chat.completions.create(model="smollm2", messages=MESSAGES,
                                                            max_tokens=NEW_TOKENS, temperature=0, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "length"


def test_smollm2_chat_stops_at_its_end_of_turn(smollm2_server) -> None:
    """The reply ends at `<|im_end|>` (the tokenizer's EOS), which is not part of the text."""
    chat = client(smollm2_server).chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say only the word: yes"}], max_tokens=16,
        temperature=0)
    assert chat.choices[0].finish_reason == "stop" and chat.usage.completion_tokens < 16
    assert chat.choices[0].message.content.strip() and "<|im_end|>" not in chat.choices[0].message.content


def test_tiny_model_without_template_refuses_chat(tiny_server) -> None:
    for stream in (False, True):
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            client(tiny_server).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4,
                                                        stream=stream)
        body = refused.value.response.json()
        assert body["error_type"] == "template_error" and "has no chat template" in body["error"]


def test_template_error_is_a_422_with_its_message(tiny_chat_server) -> None:
    two_users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    r = httpx.post(tiny_chat_server.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                   json={"messages": two_users, "max_tokens": 2})
    assert r.status_code == 422
    assert r.json() == {"error": "Template error: Conversation roles must alternate user/assistant/user/assistant/...",
                        "error_type": "template_error"}
    ok = httpx.post(tiny_chat_server.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                    json={"messages": two_users[:1], "max_tokens": 2, "temperature": 0})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2

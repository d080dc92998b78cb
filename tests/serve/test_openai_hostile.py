"""OpenAI parameters a client relies on, and requests meant to hurt the server, through real clients.

`logit_bias` is applied (it was accepted and silently dropped): +100 forces a token, -100 bans it, on
/v1/completions and /v1/chat/completions, checked against `transformers` on the same checkpoint. A parameter
that would change the output and is not implemented (`min_p`, `functions`, an image part) is a 422 naming it.
A regex grammar that takes seconds to compile no longer stalls every other stream: it is compiled on a worker
thread while the batch keeps stepping.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch

from fixtures_serve import SERVE_API_KEY

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}"}
PROMPT = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n"
HOSTILE_REGEX = "((a{100}){100}){100}"   # seconds of llguidance lexer work for its first mask


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=SERVE_API_KEY, max_retries=0)


def greedy_biased(hf, prompt_ids: list[int], steps: int, bias: dict[int, float]) -> list[int]:
    """Greedy decoding with OpenAI's rule applied here: each listed token's logit plus its bias."""
    generated: list[int] = []
    for _ in range(steps):
        with torch.no_grad():
            scores = hf[0](torch.tensor([prompt_ids + generated])).logits[0, -1, :len(hf[1])].double()
        for token, b in bias.items():
            scores[token] += b
        generated.append(int(scores.argmax()))
    return generated


def test_logit_bias_bans_and_forces_tokens_on_completions(tiny_server, hf):
    prompt_ids = hf[1](PROMPT, add_special_tokens=False)["input_ids"]
    plain = greedy_biased(hf, prompt_ids, 8, {})
    bias = {plain[0]: -100.0, plain[1]: -100.0, plain[2]: -50.0}
    want = greedy_biased(hf, prompt_ids, 8, bias)
    assert want != plain                                           # the bias changes this output
    got = oai(tiny_server).completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0,
                                              logprobs=0, logit_bias={str(k): v for k, v in bias.items()})
    assert "".join(got.choices[0].logprobs.tokens) == hf[1].decode(want)
    forced = hf[1](" banana", add_special_tokens=False)["input_ids"][-1]
    sampled = oai(tiny_server).completions.create(model="tiny", prompt=PROMPT, max_tokens=5, temperature=1.0,
                                                  seed=7, logprobs=0, logit_bias={str(forced): 100})
    assert sampled.choices[0].logprobs.tokens == [hf[1].decode([forced])] * 5   # +100 wins any draw here


def test_logit_bias_on_chat_and_streams(tiny_chat_server, hf):
    forced = hf[1](" yes", add_special_tokens=False)["input_ids"][-1]
    client = oai(tiny_chat_server)
    done = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=4, temperature=0, logit_bias={str(forced): 100})
    assert done.choices[0].message.content == hf[1].decode([forced] * 4)
    chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=4, temperature=0.7, seed=1, stream=True,
                                                 logit_bias={str(forced): 100}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == hf[1].decode([forced] * 4)


@pytest.mark.parametrize(("bias", "message"), [
    ({"999999": 5}, "`logit_bias` keys must be token ids >= 0 and < 2048"),
    ({"-1": 5}, "`logit_bias` keys must be token ids"),
    ({"abc": 5}, "`logit_bias` keys must be token ids"),
    ({"5": 101}, "numbers >= -100 and <= 100"),
    ({"5": -100.5}, "numbers >= -100 and <= 100"),
])
def test_bad_logit_bias_is_a_422_naming_it(tiny_server, bias, message):
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        oai(tiny_server).completions.create(model="tiny", prompt="x", max_tokens=2, logit_bias=bias)
    assert message in refused.value.response.json()["error"]


@pytest.mark.parametrize(("extra", "message"), [
    ({"min_p": 0.2}, "`min_p` is not supported"),
    ({"top_k": 5}, "`top_k` is not supported"),
    ({"ignore_eos": True}, "`ignore_eos` is not supported"),
    ({"guided_regex": "[0-9]+"}, "use `response_format`"),
    ({"functions": [{"name": "f", "parameters": {}}]}, "use `tools`"),
])
def test_parameters_that_would_be_dropped_are_refused(tiny_chat_server, extra, message):
    client = oai(tiny_chat_server)
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                                       extra_body=extra)
    assert message in refused.value.response.json()["error"]
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model="tiny", prompt="x", max_tokens=2, extra_body=extra)
    fine = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                                          user="someone", store=False, extra_body={"top_k": -1, "min_p": 0})
    assert fine.choices[0].finish_reason == "length"                # harmless or "off" values pass


def test_an_image_part_is_refused_not_dropped(tiny_chat_server):
    content = [{"type": "text", "text": "what is this?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        oai(tiny_chat_server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}],
                                                      max_tokens=2)
    assert "'image_url' part" in refused.value.response.json()["error"]


def test_hostile_grammar_compiles_while_other_streams_keep_producing(tiny_server, hf):
    eos = hf[1].eos_token_id
    arrivals: list[float] = []
    started, stop = threading.Event(), threading.Event()

    def streams() -> None:  # one stream after another until the hostile request is answered
        body = {"prompt": PROMPT, "max_tokens": 400, "temperature": 0, "stream": True, "logit_bias": {str(eos): -100}}
        while not stop.is_set():
            with httpx.stream("POST", tiny_server.url + "/v1/completions", json=body, headers=AUTH, timeout=120) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data:") and line != "data: [DONE]":
                        json.loads(line[5:])
                        arrivals.append(time.monotonic())
                        started.set()

    reader = threading.Thread(target=streams)
    reader.start()
    try:
        assert started.wait(60)
        begin = time.monotonic()
        r = httpx.post(tiny_server.url + "/generate", headers=AUTH, timeout=120, json={
            "inputs": "a", "parameters": {"max_new_tokens": 5, "grammar": {"type": "regex", "value": HOSTILE_REGEX}}})
        end = time.monotonic()
    finally:
        stop.set()
        reader.join(120)
    # its lexer may also give up once output starts: then the client gets the grammar's failure, never a
    # truncated output passed off as complete
    assert r.status_code == 200 or (r.status_code == 424 and "grammar failed" in r.json()["error"]), r.text
    assert end - begin > 0.5, "the grammar was not hostile enough to test anything"
    during = [t for t in arrivals if begin <= t <= end]
    gaps = [b - a for a, b in zip([begin, *during], [*during, end], strict=True)]
    assert max(gaps) < 0.4 * (end - begin), f"the streams stalled {max(gaps):.2f} s of {end - begin:.2f} s"

"""Speculative decoding and grammar-constrained output through the server (the engine in its own process)."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import jsonschema

from fixtures_serve import SERVE_API_KEY

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}"}
PROMPTS = ["def add(a, b):\n    return a + b\n\ndef add(a, b):\n", "a b c a b c a b", "import os\nimport os\n",
           "for i in range(10):\n    print(i)\nfor i in range(10):\n", "x = 1\ny = 2\nx = 1\n", "int main() {"]
SCHEMA = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 6},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "ok": {"type": "boolean"},
                         "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3}},
          "required": ["name", "age", "ok", "tags"], "additionalProperties": False}


async def _stream(client: httpx.AsyncClient, prompt: str, **parameters) -> list[dict]:
    body = {"inputs": prompt, "parameters": {"do_sample": False, "details": True, **parameters}}
    async with client.stream("POST", "/generate_stream", json=body) as r:
        assert r.status_code == 200, await r.aread()
        return [json.loads(line[5:]) async for line in r.aiter_lines() if line.startswith("data:")]


def test_streams_with_speculation_equal_streams_without(tiny_server) -> None:
    async def run() -> tuple[list[list[dict]], list[list[dict]]]:
        async with httpx.AsyncClient(base_url=tiny_server.url, headers=AUTH, timeout=120) as client:
            plain = await asyncio.gather(*(_stream(client, p, max_new_tokens=40, speculate=0) for p in PROMPTS))
            spec = await asyncio.gather(*(_stream(client, p, max_new_tokens=40, speculate=6) for p in PROMPTS))
            return plain, spec

    plain, spec = asyncio.run(run())
    for a, b in zip(plain, spec, strict=True):
        assert [e["token"]["id"] for e in b] == [e["token"]["id"] for e in a]
        assert [e["index"] for e in b] == list(range(1, len(b) + 1))       # one event per token, in order
        assert b[-1]["generated_text"] == a[-1]["generated_text"]
        assert "".join(e["token"]["text"] for e in b if not e["token"]["special"]) == b[-1]["generated_text"]
        assert b[-1]["details"]["generated_tokens"] == a[-1]["details"]["generated_tokens"] == len(b)


def test_stop_sequence_and_length_end_a_speculating_request_at_the_same_token(tiny_server) -> None:
    with httpx.Client(base_url=tiny_server.url, headers=AUTH, timeout=120) as client:
        free = client.post("/generate", json={"inputs": PROMPTS[0], "parameters": {
            "max_new_tokens": 40, "do_sample": False, "speculate": 0}}).json()["generated_text"]
        stop = free[5:9]
        for speculate in (0, 8):
            body = {"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 40, "do_sample": False, "details": True,
                                                         "stop": [stop], "speculate": speculate}}
            r = client.post("/generate", json=body).json()
            assert r["details"]["finish_reason"] == "stop_sequence" and r["generated_text"].endswith(stop)
            assert r["generated_text"] == free[:free.index(stop) + len(stop)]
            short = client.post("/generate", json={"inputs": PROMPTS[0], "parameters": {
                "max_new_tokens": 7, "do_sample": False, "details": True, "speculate": speculate}}).json()
            assert short["details"]["generated_tokens"] == 7 and short["details"]["finish_reason"] == "length"


def test_json_grammar_constrains_every_request_of_a_mixed_batch(tiny_server) -> None:
    grammar = {"type": "json", "value": SCHEMA}

    async def run() -> list[dict]:
        async with httpx.AsyncClient(base_url=tiny_server.url, headers=AUTH, timeout=120) as client:
            bodies = [{"inputs": p, "parameters": {"max_new_tokens": 80, "do_sample": i % 2 == 1, "seed": i,
                                                   **({"grammar": grammar} if i % 3 else {})}}
                      for i, p in enumerate(PROMPTS * 2)]
            replies = await asyncio.gather(*(client.post("/generate", json=b) for b in bodies))
            return [{"constrained": "grammar" in b["parameters"], "status": r.status_code, **r.json()}
                    for b, r in zip(bodies, replies, strict=True)]

    results = asyncio.run(run())
    assert all(r["status"] == 200 for r in results)
    constrained = [r for r in results if r["constrained"]]
    assert len(constrained) == 8
    for r in constrained:
        jsonschema.validate(json.loads(r["generated_text"]), SCHEMA)
    assert any(not _is_json(r["generated_text"]) for r in results if not r["constrained"])   # the mask did it


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_regex_grammar_and_openai_response_format(tiny_server) -> None:
    pattern = r"(yes|no), [0-9]{3}-[a-z]{2,4}!"
    with httpx.Client(base_url=tiny_server.url, headers=AUTH, timeout=120) as client:
        r = client.post("/generate", json={"inputs": "Answer:", "parameters": {
            "max_new_tokens": 30, "grammar": {"type": "regex", "value": pattern}}})
        assert r.status_code == 200 and re.fullmatch(pattern, r.json()["generated_text"]), r.text
        r = client.post("/v1/completions", json={
            "prompt": "JSON:", "max_tokens": 80, "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}})
        assert r.status_code == 200, r.text
        jsonschema.validate(json.loads(r.json()["choices"][0]["text"]), SCHEMA)
        r = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 60, "temperature": 0,
            "response_format": {"type": "json_object"}})
        if r.status_code == 200:          # the tiny model may have no chat template: 422, checked elsewhere
            assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)


def test_invalid_grammars_are_422_with_the_reason(tiny_server) -> None:
    with httpx.Client(base_url=tiny_server.url, headers=AUTH, timeout=30) as client:
        cases = [({"type": "regex", "value": "[a-z"}, "regex"),
                 ({"type": "json", "value": "{not json"}, "not valid JSON"),
                 ({"type": "json", "value": {"type": "object", "properties": {"a": {"minimum": "x"}}}}, "schema"),
                 ({"type": "yaml", "value": "a: 1"}, "`type` must be"),
                 ("just a string", "grammar must be")]
        for grammar, reason in cases:
            r = client.post("/generate", json={"inputs": "x", "parameters": {"grammar": grammar}})
            assert r.status_code == 422 and reason in r.json()["error"], (grammar, r.text)
            assert r.json()["error_type"] == "validation"
        r = client.post("/v1/completions", json={"prompt": "x", "response_format": {"type": "xml"}})
        assert r.status_code == 422 and "response_format" in r.json()["error"]
        r = client.post("/generate", json={"inputs": "x", "parameters": {"speculate": -1}})
        assert r.status_code == 422 and "speculate" in r.json()["error"]

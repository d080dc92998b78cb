"""Defects the soak found in the server, each pinned by the request that showed it."""

from __future__ import annotations

import httpx
import pytest

from fixtures_serve import SERVE_API_KEY

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}", "content-type": "application/json"}

# JSON may escape a lone surrogate, and json.loads lets one through raw UTF-8 behind a BOM ("surrogatepass"):
# either way the body parses into a str that is no Unicode text, which the tokenizer refused with a TypeError (500).
LONE_SURROGATES = [
    ("/generate", b'{"inputs": "def f():\\ud800", "parameters": {"max_new_tokens": 2}}'),
    ("/generate_stream", b'{"inputs": "x\\udfff", "parameters": {"max_new_tokens": 2}}'),
    ("/", b'{"inputs": "\\udc80", "parameters": {"max_new_tokens": 2}}'),
    ("/tokenize", b'{"inputs": "a\\ud800b"}'),
    ("/v1/completions", b'{"prompt": "a\\ud800b", "max_tokens": 2}'),
    ("/v1/completions", b'{"prompt": ["ok", "a\\ud800b"], "max_tokens": 2}'),
    ("/generate", b'\xef\xbb\xbf{"inputs": "\xed\xa0\x80", "parameters": {"max_new_tokens": 2}}'),
]


@pytest.mark.parametrize(("route", "body"), LONE_SURROGATES)
def test_lone_surrogate_is_a_422_not_a_500(tiny_server, route: str, body: bytes) -> None:
    r = httpx.post(tiny_server.url + route, content=body, headers=AUTH, timeout=60)
    if route == "/generate_stream":   # TGI's stream contract: 200 and one error event
        assert r.status_code == 200 and '"error_type": "validation"' in r.text and "surrogate" in r.text, r.text
        return
    assert r.status_code == 422, (r.status_code, r.text)
    assert r.json()["error_type"] == "validation" and "lone surrogate" in r.json()["error"]
    # the server is still fine for the next client
    ok = httpx.post(tiny_server.url + "/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 1}},
                    headers=AUTH, timeout=60)
    assert ok.status_code == 200


def test_lone_surrogate_in_a_chat_message(tiny_chat_server) -> None:
    body = b'{"messages": [{"role": "user", "content": "hi \\ud83d"}], "max_tokens": 2}'
    r = httpx.post(tiny_chat_server.url + "/v1/chat/completions", content=body, headers=AUTH, timeout=60)
    assert r.status_code == 422 and "lone surrogate" in r.json()["error"], r.text

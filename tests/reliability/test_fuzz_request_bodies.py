"""Raw hostile bodies to the real server: any bytes, any JSON shape, nesting past the stack, numbers past int64.

tests/serve/test_serve_fuzz.py draws bodies shaped by our OpenAPI schema; these are shaped by
nothing. Every reply must be a 2xx or a 4xx with a JSON `error` (never a 5xx, never a hang),
and the server must still answer a good request afterwards.
"""

from __future__ import annotations

import json

import httpx
import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from fixtures_serve import SERVE_API_KEY

ROUTES = ["/generate", "/generate_stream", "/v1/completions", "/v1/chat/completions", "/tokenize"]
HEADERS = {"Authorization": f"Bearer {SERVE_API_KEY}", "Content-Type": "application/json"}
NUMBER = st.sampled_from([2**63, -(2**63) - 1, 10**400, 1e308, -0.0, 2**31]) | st.integers() | st.floats()
TEXT = st.text(max_size=12) | st.sampled_from(["\ud800", "<fim_prefix>", "\x00"])
LEAF = st.none() | st.booleans() | NUMBER | TEXT
JSON_ANY = st.recursive(LEAF, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3),
                        max_leaves=10)
FIELDS = st.sampled_from(["inputs", "parameters", "prompt", "messages", "model", "max_tokens", "max_new_tokens",
                          "stream", "n", "best_of", "temperature", "top_p", "stop", "seed", "logprobs", "suffix",
                          "adapter_id", "truncate", "top_n_tokens", "logit_bias", "response_format", "tools"])
BODY = st.dictionaries(FIELDS, JSON_ANY, max_size=5) | JSON_ANY
RAW_BODIES = [b"[" * 100_000, b'{"inputs": ' + b"[" * 100_000, b'{"inputs": "x", "parameters": {"seed": 1e999}}',
              b'{"inputs": "x", "parameters": {"max_new_tokens": 18446744073709551616}}', b"\xff\xfe{",
              b'{"inputs": "x", "inputs": 5}', b'{"prompt": "x", "max_tokens": NaN}', b"", b"null"]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    from codefoundry.serve import ServeConfig, start_in_thread

    running = start_in_thread(ServeConfig(model=tiny_model_dir, port=0, api_key=SERVE_API_KEY, max_total_tokens=64,
                                          max_input_tokens=48, max_batch_total_tokens=2048))
    yield running
    running.stop()


def _post(server, route: str, content: bytes) -> httpx.Response:
    return httpx.post(server.url + route, content=content, headers=HEADERS, timeout=30)


def _check(r: httpx.Response, what: object) -> None:
    assert r.status_code < 500, (what, r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert "error" in r.json() or "detail" in r.json() or "message" in r.text, r.text[:300]


@fuzz(30)
@given(route=st.sampled_from(ROUTES), body=BODY)
def test_fuzz_any_json_body_is_a_2xx_or_a_4xx(server, route, body):
    content = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    _check(_post(server, route, content), body)


@pytest.mark.parametrize("raw", RAW_BODIES, ids=range(len(RAW_BODIES)))
def test_raw_bodies_are_4xx(server, raw):
    for route in ROUTES:
        _check(_post(server, route, raw), raw[:40])
    ok = _post(server, "/generate", json.dumps({"inputs": "def f(", "parameters": {"max_new_tokens": 2}}).encode())
    assert ok.status_code == 200

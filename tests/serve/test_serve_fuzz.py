"""Fuzz every POST route's body, as our OpenAPI schema describes it, with hypothesis: never a 5xx."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures_serve import SERVE_API_KEY

ROUTES = {"/generate": "GenerateRequest", "/": "CompatGenerateRequest", "/generate_stream": "GenerateRequest",
          "/tokenize": "GenerateRequest", "/v1/completions": "CompletionRequest",
          "/v1/chat/completions": "ChatRequest"}
TEXT = st.sampled_from(["", "x", "def f(", "<fim_prefix>a<fim_suffix>b<fim_middle>", "<|endoftext|>", "é€😀",
                        "\x00", "a" * 600]) | st.text(max_size=20)
SCALAR = st.none() | st.booleans() | st.integers(-3, 10) | st.floats(allow_nan=True) | TEXT
ANY_JSON = SCALAR | st.lists(SCALAR, max_size=3) | st.dictionaries(TEXT, SCALAR, max_size=3)


def _strategy(schema: dict, components: dict, depth: int = 0) -> st.SearchStrategy:
    """Values that mostly follow `schema` (types, nesting), with some of any JSON type mixed in."""
    if "$ref" in schema:
        return _strategy(components[schema["$ref"].rsplit("/", 1)[1]], components, depth)
    if "anyOf" in schema:
        return st.one_of([_strategy(s, components, depth) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object" and depth < 3:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        fields = {k: _strategy(v, components, depth + 1) for k, v in props.items()}
        return st.fixed_dictionaries({k: fields[k] for k in required},
                                     optional={k: fields[k] for k in props if k not in required})
    if kind == "array":
        return st.lists(_strategy(schema.get("items", {}), components, depth + 1), max_size=5)
    simple = {"string": TEXT, "integer": st.integers(-2, 12) | st.integers(), "boolean": st.booleans(),
              "number": st.floats(-3, 3) | st.floats(allow_nan=False), "null": st.none()}
    return simple.get(kind, ANY_JSON)


@pytest.fixture(scope="module")
def fuzz_server(tiny_model_dir):
    """A server with short sequences (64 tokens), so that every accepted request finishes quickly."""
    from codefoundry.serve import ServeConfig, start_in_thread

    running = start_in_thread(ServeConfig(model=tiny_model_dir, port=0, api_key=SERVE_API_KEY, max_total_tokens=64,
                                          max_input_tokens=48, max_batch_total_tokens=2048))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def schema(fuzz_server) -> dict:
    return httpx.get(fuzz_server.url + "/api-doc/openapi.json").json()


@pytest.mark.parametrize("route", list(ROUTES))
def test_serve_fuzz_no_5xx(fuzz_server, schema, route):
    components = schema["components"]["schemas"]
    body = _strategy({"$ref": f"#/components/schemas/{ROUTES[route]}"}, components) | ANY_JSON
    client = httpx.Client(base_url=fuzz_server.url, timeout=60,
                          headers={"Authorization": f"Bearer {SERVE_API_KEY}"})

    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body)
    def check(payload: object) -> None:
        r = client.post(route, content=json.dumps(payload), headers={"content-type": "application/json"})
        assert r.status_code < 500, (payload, r.status_code, r.text[:300])
        if r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"):
            assert '"error_type": "generation"' not in r.text, (payload, r.text[:300])
        elif r.status_code != 200:
            assert r.json()["error_type"] in {"validation", "template_error", "generation"}, r.text

    try:
        check()
    finally:
        client.close()

"""The TGI and OpenAI routes against a real server on 127.0.0.1, with the clients people use."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from huggingface_hub import InferenceClient
from prometheus_client.parser import text_string_to_metric_families

from fixtures_serve import SERVE_API_KEY

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}"}
FIM_BODY = {"inputs": "<fim_prefix>def f(x):\n    <fim_suffix>\n    return y<fim_middle>",
            "parameters": {"max_new_tokens": 60, "temperature": 0.2, "top_p": 0.95, "return_full_text": False}}


@pytest.fixture(scope="module")
def http(tiny_server):
    with httpx.Client(base_url=tiny_server.url, headers=AUTH, timeout=60) as client:
        yield client


def greedy(http: httpx.Client, prompt: str, n: int) -> dict:
    r = http.post("/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": n, "details": True,
                                                                      "do_sample": False}})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(params=["tiny", "smollm2"])
def served(request):
    """The real-client tests run on the tiny model and on SmolLM2 (real weights, a Llama)."""
    return request.getfixturevalue(f"{request.param}_server")


def test_serve_inference_client_plain_details_stream(served, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)   # the suite is offline; 127.0.0.1 is ours
    client = InferenceClient(base_url=served.url, api_key=SERVE_API_KEY)
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=60) as http:
        expected = greedy(http, "def add(a, b):", 8)
    text = client.text_generation("def add(a, b):", max_new_tokens=8)
    assert text == expected["generated_text"]
    out = client.text_generation("def add(a, b):", max_new_tokens=8, details=True)
    assert out.generated_text == expected["generated_text"]
    assert out.details.finish_reason == "length" and out.details.generated_tokens == 8
    assert [t.id for t in out.details.tokens] == [t["id"] for t in expected["details"]["tokens"]]
    assert all(t.logprob is not None and t.logprob <= 0 for t in out.details.tokens)
    chunks = list(client.text_generation("def add(a, b):", max_new_tokens=8, stream=True, details=True))
    assert [c.token.id for c in chunks] == [t["id"] for t in expected["details"]["tokens"]]
    assert chunks[-1].generated_text == expected["generated_text"]
    assert chunks[-1].details.finish_reason == "length" and all(c.generated_text is None for c in chunks[:-1])


def test_serve_openai_completions_and_models(served):
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=SERVE_API_KEY)
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=60) as http:
        expected = greedy(http, "import numpy as", 6)["generated_text"]
    done = client.completions.create(model="any", prompt="import numpy as", max_tokens=6, temperature=0)
    assert done.choices[0].text == expected and done.choices[0].finish_reason == "length"
    assert done.usage.completion_tokens == 6 and done.usage.total_tokens == done.usage.prompt_tokens + 6
    pieces = client.completions.create(model="any", prompt="import numpy as", max_tokens=6, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    chunks = list(pieces)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
    assert chunks[-1].usage.completion_tokens == 6
    assert [m.id for m in client.models.list()] == [served.state.model_id]
    # chat with the openai client: tests/serve/test_serve_smollm2.py (it needs the model's own chat template)


def test_serve_openai_stream_ends_with_done(http):
    with http.stream("POST", "/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 2, "temperature": 0,
                                                      "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    choices = [json.loads(line[6:])["choices"][0]["index"] for line in lines[:-1]]
    assert sorted(set(choices)) == [0, 1]
    r = http.post("/v1/completions", json={"prompt": ["a"] * 5, "max_tokens": 1})
    assert r.status_code == 422 and "batch size of 4" in r.json()["error"]


def test_serve_llm_ls_fim_request(http):
    r = http.post("/generate", json=FIM_BODY, headers={"User-Agent": "llm-ls/0.5.3; rust/unknown; ide/vscode"})
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body, dict) and isinstance(body["generated_text"], str)
    assert "<fim_" not in body["generated_text"] and "<|endoftext|>" not in body["generated_text"]
    assert int(r.headers["x-generated-tokens"]) >= 1 and float(r.headers["x-compute-time"]) > 0
    tokens = http.post("/tokenize", json={"inputs": FIM_BODY["inputs"]}).json()
    assert [t["id"] for t in tokens if t["text"].startswith("<fim_")] == [1, 3, 2]   # special tokens recognised
    assert isinstance(http.post("/", json=FIM_BODY).json(), list)                    # `/` answers a list


def test_serve_details_prefill_top_tokens_and_full_text(http):
    r = http.post("/generate", json={"inputs": "x = 1", "parameters": {
        "max_new_tokens": 3, "decoder_input_details": True, "top_n_tokens": 2, "return_full_text": True}}).json()
    assert r["generated_text"].startswith("x = 1")
    prefill = r["details"]["prefill"]
    assert prefill[0]["logprob"] is None and all(p["logprob"] <= 0 for p in prefill[1:]) and len(prefill) >= 2
    assert [len(top) for top in r["details"]["top_tokens"]] == [2, 2, 2]


def test_serve_stop_sequence_and_seeded_sampling(http):
    base = greedy(http, "def g():", 12)["generated_text"]
    stop = base[3:6]
    r = http.post("/generate", json={"inputs": "def g():", "parameters": {"max_new_tokens": 12, "stop": [stop],
                                                                          "details": True}}).json()
    assert r["details"]["finish_reason"] == "stop_sequence" and r["generated_text"].endswith(stop)
    params = {"max_new_tokens": 8, "do_sample": True, "temperature": 0.9, "seed": 7, "details": True}
    a = http.post("/generate", json={"inputs": "def g():", "parameters": params}).json()
    b = http.post("/generate", json={"inputs": "def g():", "parameters": params}).json()
    assert a["generated_text"] == b["generated_text"] and a["details"]["seed"] == 7


@pytest.mark.parametrize(("params", "message"), [
    ({"temperature": 0}, "`temperature` must be strictly positive"),
    ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"max_new_tokens": 600}, "`inputs` tokens + `max_new_tokens` must be <= 512. Given: 1 `inputs` tokens and "
                              "600 `max_new_tokens`"),
    ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5"),
    ({"grammar": {"type": "regex", "value": "[a-z"}}, "grammar: invalid regex"),
])
def test_serve_validation_errors_per_route(http, params, message):
    r = http.post("/generate", json={"inputs": "x", "parameters": params})
    assert r.status_code == 422
    assert r.json() == {"error": "Input validation error: " + r.json()["error"].split(": ", 1)[1],
                        "error_type": "validation"}
    assert message in r.json()["error"]
    with http.stream("POST", "/generate_stream", json={"inputs": "x", "parameters": params}) as s:
        assert s.status_code == 200                 # TGI: stream errors are an SSE event
        events = [json.loads(line[5:]) for line in s.iter_lines() if line.startswith("data:")]
    assert events == [{"error": r.json()["error"], "error_type": "validation"}]


def test_serve_empty_inputs_and_bad_json(http):
    r = http.post("/generate", json={"inputs": ""})
    assert r.status_code == 422 and r.json()["error"] == "Input validation error: `inputs` cannot be empty"
    r = http.post("/generate", json={"parameters": {}})
    assert r.status_code == 422 and "inputs" in r.json()["error"]
    r = http.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_serve_auth_and_payload_limit(tiny_server):
    with httpx.Client(base_url=tiny_server.url, timeout=30) as anon:
        assert anon.post("/generate", json=FIM_BODY).status_code == 401
        assert anon.post("/generate", json=FIM_BODY, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert anon.post("/v1/completions", json={"prompt": "x"}).status_code == 401
        assert anon.post("/tokenize", json={"inputs": "x"}).status_code == 401
        for path in ("/health", "/info", "/metrics", "/v1/models", "/api-doc/openapi.json"):
            assert anon.get(path).status_code == 200, path
        big = anon.post("/generate", content=b"x" * 2_000_001, headers={**AUTH, "content-type": "application/json"})
        assert big.status_code == 413 and big.json()["error_type"] == "payload_too_large"


def test_serve_info_health_openapi(http, tiny_server):
    info = http.get("/info").json()
    assert info["max_total_tokens"] == 512 and info["max_input_tokens"] == 511
    assert info["max_batch_total_tokens"] == 16384 and info["router"] == "text-generation-router"
    assert http.get("/health").status_code == 200 and http.get("/health").content == b""
    schema = http.get("/api-doc/openapi.json").json()
    for path in ("/", "/generate", "/generate_stream", "/tokenize", "/v1/completions", "/v1/chat/completions"):
        assert "post" in schema["paths"][path], path
    props = schema["components"]["schemas"]["GenerateParameters"]["properties"]
    assert {"temperature", "top_p", "max_new_tokens", "stop", "seed", "details"} <= set(props)
    # the stream's event is documented: 200 is text/event-stream of StreamResponse
    ok = schema["paths"]["/generate_stream"]["post"]["responses"]["200"]["content"]
    assert ok["text/event-stream"]["schema"]["$ref"].endswith("/StreamResponse")
    assert {"index", "token", "generated_text", "details"} <= set(schema["components"]["schemas"]["StreamResponse"]
                                                                  ["properties"])
    # /info is its schema: every documented field is answered (TGI < 2.1's max_input_length too), nothing else
    assert set(info) == set(schema["components"]["schemas"]["Info"]["properties"])
    assert info["max_input_length"] == info["max_input_tokens"] and info["model_id"] == tiny_server.state.model_id


def test_serve_metrics_prometheus(http):
    greedy(http, "hello", 3)
    http.post("/generate", json={"inputs": ""})
    families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
    assert families["tgi_request_count"].type == "counter"
    assert families["tgi_request_duration"].type == "histogram"
    assert families["tgi_request_time_to_first_token"].type == "histogram"
    assert families["tgi_queue_size"].type == "gauge" and families["tgi_batch_max_total_tokens"].type == "gauge"
    value = {s.name: s.value for f in families.values() for s in f.samples if not s.labels}
    assert value["tgi_request_count_total"] >= 2 and value["tgi_request_success_total"] >= 1
    assert value["tgi_batch_max_total_tokens"] == 16384 and value["tgi_request_time_to_first_token_count"] >= 1
    failures = {s.labels["err"]: s.value for s in families["tgi_request_failure"].samples}
    assert failures["validation"] >= 1
    text = http.get("/metrics").text
    assert "\ntgi_request_count " in text and "_created" not in text     # TGI's names, not prometheus_client's


def test_serve_connections_send_without_delay(tiny_server, http):
    """Every accepted connection has TCP_NODELAY: without it each response (headers, then body) waited ~40 ms for
    the client's delayed ACK (GET /info took 48 ms instead of 3 ms)."""
    import socket

    assert http.get("/info").status_code == 200         # a keep-alive connection stays open
    sockets = [p.transport.get_extra_info("socket") for p in tiny_server.server.server_state.connections]
    assert sockets and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)

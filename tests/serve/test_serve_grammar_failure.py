"""A grammar whose matcher fails mid-output (llguidance runs out of lexer fuel) ends the request with an error.

Its matcher then allows only EOS, so the request used to end with `finish_reason: eos_token` and a
truncated text that looked like a complete, valid output. The client must see the failure instead:
TGI's 424 `generation` error (JSON, or the stream's error event) and OpenAI's error object.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from codefoundry.generate import SamplingParams, generate
from fixtures_serve import SERVE_API_KEY

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}"}
# compiles and validates, but its lexer builds too many expressions once output starts: fails after a token or two
FAILING_REGEX = "(a|aa){300}b"
FINE_REGEX = "(ab){3}"


def test_engine_marks_the_completion_as_failed(tiny_model_dir) -> None:
    from codefoundry.model import load_model
    from codefoundry.tokenizer import load_tokenizer

    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    failed, fine = generate(model, tokenizer, ["a", "a"], [
        SamplingParams(max_new_tokens=8, grammar=("regex", FAILING_REGEX)),
        SamplingParams(max_new_tokens=8, grammar=("regex", FINE_REGEX))])
    assert failed.error is not None and "too many expressions" in failed.error and len(failed.error) < 400
    assert fine.error is None and fine.text == "ababab"


def test_tgi_routes_answer_a_generation_error(tiny_server) -> None:
    body = {"inputs": "a", "parameters": {"max_new_tokens": 8, "grammar": {"type": "regex", "value": FAILING_REGEX}}}
    r = httpx.post(tiny_server.url + "/generate", json=body, headers=AUTH, timeout=60)
    assert r.status_code == 424, r.text
    assert r.json()["error_type"] == "generation" and "grammar failed" in r.json()["error"]
    with httpx.stream("POST", tiny_server.url + "/generate_stream", json=body, headers=AUTH, timeout=60) as s:
        events = [json.loads(line[5:]) for line in s.iter_lines() if line.startswith("data:")]
    assert events and events[-1].get("error_type") == "generation", events
    assert not any(e.get("generated_text") for e in events)       # no event claims a finished output
    ok = httpx.post(tiny_server.url + "/generate", headers=AUTH, timeout=60, json={
        "inputs": "a", "parameters": {"max_new_tokens": 8, "grammar": {"type": "regex", "value": FINE_REGEX}}})
    assert ok.status_code == 200 and ok.json()["generated_text"] == "ababab"


def test_openai_route_answers_an_error(tiny_server) -> None:
    client = openai.OpenAI(base_url=tiny_server.url + "/v1", api_key=SERVE_API_KEY, max_retries=0)
    schema = {"type": "string", "pattern": f"^{FAILING_REGEX}$"}   # a JSON schema pattern is unanchored otherwise
    response_format = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    with pytest.raises(openai.APIStatusError) as raised:
        client.completions.create(model="tiny", prompt="a", max_tokens=8,
                                  extra_body={"response_format": response_format})
    assert raised.value.status_code == 424 and "grammar failed" in raised.value.response.json()["error"]
    stream = client.completions.create(model="tiny", prompt="a", max_tokens=8, stream=True,
                                       extra_body={"response_format": response_format})
    with pytest.raises(openai.APIError) as failed:          # the stream's error event
        for _ in stream:
            pass
    assert "grammar failed" in str(failed.value.body)

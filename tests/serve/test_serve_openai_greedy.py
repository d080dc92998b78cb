"""OpenAI's `temperature: 0` is greedy whatever `top_p` and `seed` say (as OpenAI and vLLM), like TGI's greedy."""

from __future__ import annotations

import httpx

from fixtures_serve import SERVE_API_KEY

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}"}
PROMPT = "def main():\n    "


def test_serve_openai_temperature_0_ignores_top_p_and_seed(tiny_server) -> None:
    greedy = httpx.post(tiny_server.url + "/generate", headers=AUTH, timeout=60,
                        json={"inputs": PROMPT, "parameters": {"max_new_tokens": 16, "do_sample": False}})
    assert greedy.status_code == 200
    texts = set()
    for seed in (1, 2, 3):
        r = httpx.post(tiny_server.url + "/v1/completions", headers=AUTH, timeout=60,
                       json={"model": "tiny", "prompt": PROMPT, "max_tokens": 16, "temperature": 0, "top_p": 0.95,
                             "seed": seed})
        assert r.status_code == 200
        texts.add(r.json()["choices"][0]["text"])
    assert texts == {greedy.json()["generated_text"]}

"""Continuous batching via the server: 32 concurrent streams == one by one; a client that leaves frees its blocks."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fixtures_serve import SERVE_API_KEY

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}"}
NEW_TOKENS = 16
PROMPTS = [
    "def fibonacci(n):\n", "import os\nimport sys\n", "#include <stdio.h>\nint main(void) {",
    "package main\n\nfunc add(a, b int) int {", "<fim_prefix>def area(r):\n    <fim_suffix>\n    return a<fim_middle>",
    "const express = require('express');\n", "# Utilities\n\n## Install\n", "for i in range(10):\n    print(i",
]
TIE_GAP = 1e-3     # compare up to the first float32 near-tie of top-1/top-2 logprobs (as the core parity tests)


def _body(prompt: str) -> dict:
    return {"inputs": prompt, "parameters": {"max_new_tokens": NEW_TOKENS, "do_sample": False, "details": True,
                                             "top_n_tokens": 2}}


async def _stream(client: httpx.AsyncClient, prompt: str) -> list[dict]:
    async with client.stream("POST", "/generate_stream", json=_body(prompt)) as r:
        assert r.status_code == 200
        return [json.loads(line[5:]) async for line in r.aiter_lines() if line.startswith("data:")]


def test_serve_32_concurrent_streams_equal_sequential(tiny_server):
    prompts = [PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)) for i in range(32)]

    async def run() -> tuple[list[list[dict]], list[list[dict]]]:
        async with httpx.AsyncClient(base_url=tiny_server.url, headers=AUTH, timeout=120) as client:
            alone = [await _stream(client, p) for p in prompts]
            steps_before = tiny_server.state.engine_loop.steps
            together = await asyncio.gather(*(_stream(client, p) for p in prompts))
            steps = tiny_server.state.engine_loop.steps - steps_before
            assert steps < 32 * NEW_TOKENS / 2, f"{steps} engine steps: the 32 requests were not batched"
            return alone, together

    alone, together = asyncio.run(run())
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        assert "error" not in a[-1] and "error" not in b[-1], (a[-1], b[-1])
        gaps = [e["top_tokens"][0]["logprob"] - e["top_tokens"][1]["logprob"] for e in a]
        n = next((k for k, g in enumerate(gaps) if g < TIE_GAP), len(gaps))
        assert n >= 4, f"prompt {i}: near-tie at step {n}, nothing to compare"
        assert [e["token"]["id"] for e in b][:n] == [e["token"]["id"] for e in a][:n], f"prompt {i} differs"
        if n == len(gaps):
            assert b[-1]["generated_text"] == a[-1]["generated_text"]


def _metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_serve_client_disconnect_frees_blocks(tiny_server):
    url = tiny_server.url
    aborted = _metric(url, "codefoundry_requests_aborted_total")
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        body = {"inputs": "def long_function():\n", "parameters": {"max_new_tokens": 480, "do_sample": False}}
        with client.stream("POST", "/generate_stream", json=body) as r:
            lines = r.iter_lines()
            first = [next(lines) for _ in range(3)]
            assert first[0].startswith("data:")
            assert _metric(url, "codefoundry_kv_blocks_used") > 0        # it holds blocks while streaming
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (_metric(url, "codefoundry_kv_blocks_used") > 0
                                           or _metric(url, "codefoundry_requests_aborted_total") == aborted):
        time.sleep(0.05)
    assert _metric(url, "codefoundry_kv_blocks_used") == 0
    assert _metric(url, "codefoundry_requests_aborted_total") == aborted + 1
    assert tiny_server.state.in_flight == 0

"""Prefix caching behind the server: the hit metrics in /metrics grow on repeated prompts; off with the flag."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixtures_serve import SERVE_API_KEY, wait_until_healthy

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}"}
FILE = "".join(f"def handler_{i}(request):\n    return respond(request, status={200 + i})\n\n" for i in range(12))


def _metrics(url: str) -> dict[str, tuple[str, float]]:
    """Unlabelled samples by name, with their family's type."""
    families = text_string_to_metric_families(httpx.get(url + "/metrics").text)
    return {s.name: (f.type, s.value) for f in families for s in f.samples if not s.labels}


def _complete(url: str, prompt: str) -> dict:
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 4, "do_sample": False, "details": True,
                                             "top_n_tokens": 2}}
    r = httpx.post(url + "/generate", json=body, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _ids(response: dict) -> list[int]:
    """The greedy token ids up to the first near-tie (< 1e-3 apart), where float32 summation order may flip them."""
    tokens, top = response["details"]["tokens"], response["details"]["top_tokens"]
    n = next((i for i, alts in enumerate(top) if alts[0]["logprob"] - alts[1]["logprob"] < 1e-3), len(tokens))
    return [t["id"] for t in tokens[:n]]


def _logprobs(response: dict) -> list[float]:
    return [t["logprob"] for t in response["details"]["tokens"]]


def test_serve_prefix_cache_hits_grow_on_repeated_prompts(tiny_server) -> None:
    url = tiny_server.url
    before = _metrics(url)
    assert before["codefoundry_prefix_cache_queries_total"][0] == "counter"
    assert before["codefoundry_prefix_cache_hits_total"][0] == "counter"
    assert before["codefoundry_prefix_cache_hit_ratio"][0] == "gauge"
    first = _complete(url, FILE + "def handler_x(")
    second = _complete(url, FILE + "def handler_x(")         # a keystroke later: the same file
    third = _complete(url, FILE + "def handler_y(req")
    after = _metrics(url)
    hits = after["codefoundry_prefix_cache_hits_total"][1] - before["codefoundry_prefix_cache_hits_total"][1]
    queries = after["codefoundry_prefix_cache_queries_total"][1] - before["codefoundry_prefix_cache_queries_total"][1]
    prompt_tokens = len(tiny_server.state.validator.tokenizer.encode(FILE))
    assert queries >= 3 * prompt_tokens
    assert hits >= 2 * (prompt_tokens - 16)                  # the 2nd and 3rd reuse the file's full 16-token blocks
    assert 0 < after["codefoundry_prefix_cache_hit_ratio"][1] <= 1
    assert after["codefoundry_kv_blocks_cached"][1] >= prompt_tokens // 16
    assert _ids(second) == _ids(first)
    n = len(_ids(first))
    assert _logprobs(second)[:n] == pytest.approx(_logprobs(first)[:n], abs=1e-4)
    assert third["generated_text"]


def test_serve_without_prefix_caching_never_hits(tiny_model_dir: Path, tiny_server) -> None:
    from codefoundry.serve import ServeConfig, start_in_thread

    running = start_in_thread(ServeConfig(model=tiny_model_dir, port=0, api_key=SERVE_API_KEY,
                                          max_batch_total_tokens=4096, max_batch_prefill_tokens=512,
                                          enable_prefix_caching=False))
    try:
        outputs = [_complete(running.url, FILE) for _ in range(2)]
        metrics = _metrics(running.url)
        assert metrics["codefoundry_prefix_cache_hits_total"][1] == 0
        assert metrics["codefoundry_prefix_cache_queries_total"][1] > 0
        assert metrics["codefoundry_prefix_cache_hit_ratio"][1] == 0
        assert outputs[0]["details"]["tokens"] == outputs[1]["details"]["tokens"]
        assert _ids(outputs[0]) == _ids(_complete(tiny_server.url, FILE))    # the same greedy tokens with the cache
    finally:
        running.stop()


@pytest.mark.slow
def test_serve_cli_no_prefix_caching_flag(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`codefoundry serve --no-prefix-caching` in a real subprocess: repeated prompts never hit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CODEFOUNDRY_API_KEY": SERVE_API_KEY}
    with (tmp_path / "serve.log").open("w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "codefoundry"), "serve", "--model",
                                 str(tiny_model_dir), "--port", str(port), "--max-batch-total-tokens", "4096",
                                 "--no-prefix-caching"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            wait_until_healthy(proc, url, tmp_path / "serve.log")
            for _ in range(2):
                _complete(url, FILE)
            metrics = _metrics(url)
            assert metrics["codefoundry_prefix_cache_queries_total"][1] > 0
            assert metrics["codefoundry_prefix_cache_hits_total"][1] == 0
        finally:
            proc.terminate()
            proc.wait(timeout=60)

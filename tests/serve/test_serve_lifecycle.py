"""Overload (429), tracing spans, and the real `codefoundry serve` process: warmup, SIGTERM drain, exit 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fixtures_serve import wait_until_healthy

LONG = {"inputs": "def long_function():\n", "parameters": {"max_new_tokens": 480, "do_sample": False}}


@pytest.fixture(scope="module")
def small_server(tiny_model_dir: Path):
    """A second server: 2 concurrent requests at most, spans kept in memory."""
    from codefoundry.serve import ServeConfig, start_in_thread

    exporter = InMemorySpanExporter()
    running = start_in_thread(ServeConfig(model=tiny_model_dir, port=0, max_concurrent_requests=2,
                                          max_batch_total_tokens=4096), span_processor=SimpleSpanProcessor(exporter))
    running.exporter = exporter
    yield running
    running.stop()


def test_serve_overload_gives_429(small_server):
    url = small_server.url
    started = threading.Barrier(3)

    def hold() -> None:
        with httpx.stream("POST", url + "/generate_stream", json=LONG, timeout=60) as r:
            lines = r.iter_lines()
            next(lines)
            started.wait(timeout=30)
            for _ in lines:
                pass

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    started.wait(timeout=30)
    r = httpx.post(url + "/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 1}}, timeout=30)
    assert r.status_code == 429 and r.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
    with httpx.stream("POST", url + "/generate_stream", json={"inputs": "x"}, timeout=30) as s:
        events = [json.loads(line[5:]) for line in s.iter_lines() if line.startswith("data:")]
    assert events == [{"error": "Model is overloaded", "error_type": "overloaded"}]
    for t in holders:
        t.join(timeout=60)
    assert httpx.post(url + "/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 1}},
                      timeout=30).status_code == 200
    text = httpx.get(url + "/metrics").text
    assert 'tgi_request_failure{err="overloaded"} 2.0' in text


def test_serve_request_spans(small_server):
    small_server.exporter.clear()
    r = httpx.post(small_server.url + "/generate", json={"inputs": "def f():", "parameters": {"max_new_tokens": 4}},
                   timeout=30)
    assert r.status_code == 200
    spans = {s.name: s for s in small_server.exporter.get_finished_spans()}
    assert {"generate", "validation", "queue", "prefill", "decode"} <= set(spans)
    root = spans["generate"]
    for name in ("validation", "queue", "prefill", "decode"):
        assert spans[name].parent.span_id == root.context.span_id
        assert root.start_time <= spans[name].start_time <= spans[name].end_time <= root.end_time
    assert root.attributes["generated_tokens"] == 4


def test_serve_otlp_export(tiny_model_dir: Path):
    """--otlp-endpoint: spans arrive as OTLP/HTTP protobuf POSTs at /v1/traces of a real local receiver."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from codefoundry.serve import ServeConfig, start_in_thread

    posts: list[tuple[str, str, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    running = start_in_thread(ServeConfig(model=tiny_model_dir, port=0, max_batch_total_tokens=1024,
                                          max_batch_prefill_tokens=64,
                                          otlp_endpoint=f"http://127.0.0.1:{receiver.server_address[1]}"))
    try:
        r = httpx.post(running.url + "/generate", json={"inputs": "def f():", "parameters": {"max_new_tokens": 2}},
                       timeout=30)
        assert r.status_code == 200
    finally:
        running.stop()
        receiver.shutdown()
    assert posts and posts[0][0] == "/v1/traces" and posts[0][1] == "application/x-protobuf"
    assert b"prefill" in b"".join(p[2] for p in posts) and b"decode" in b"".join(p[2] for p in posts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_sigterm_drains_in_flight_then_exits(small_server):
    """The SIGTERM handler of the running uvicorn server: 503 at once, the stream finishes, then the server stops."""
    url = small_server.url
    body = {"inputs": "def long_function():\n", "parameters": {"max_new_tokens": 200, "do_sample": False,
                                                               "details": True}}
    with httpx.stream("POST", url + "/generate_stream", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data:")
        small_server.server.handle_exit(signal.SIGTERM, None)
        assert httpx.get(url + "/health", timeout=5).status_code == 503
        assert httpx.post(url + "/generate", json={"inputs": "x"}, timeout=5).status_code == 503
        events = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    assert events[-1]["details"]["generated_tokens"] == 200
    small_server.thread.join(timeout=30)
    assert not small_server.thread.is_alive()
    assert small_server.state.engine_loop.stop() == 0           # the engine process exits 0 after the drain


@pytest.mark.slow
def test_serve_cli_sigterm_drains_stream_and_exits_0(tiny_model_dir: Path, tmp_path: Path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CODEFOUNDRY_API_KEY": "k"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "codefoundry"), "serve", "--model", str(tiny_model_dir),
                             "--port", str(port), "--max-batch-total-tokens", "4096"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        wait_until_healthy(proc, url, tmp_path / "serve.log")
        auth = {"Authorization": "Bearer k"}
        body = {"inputs": "def long_function():\n", "parameters": {"max_new_tokens": 300, "do_sample": False,
                                                                   "details": True}}
        with httpx.stream("POST", url + "/generate_stream", json=body, headers=auth, timeout=60) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data:")
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert httpx.get(url + "/health", timeout=5).status_code == 503
            refused = httpx.post(url + "/generate", json={"inputs": "x"}, headers=auth, timeout=5)
            assert refused.status_code == 503 and refused.json()["error_type"] == "shutting_down"
            events = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
        assert events[-1]["details"]["generated_tokens"] == 300 and events[-1]["generated_text"]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()

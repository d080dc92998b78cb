"""Misbehaving endpoints (real HTTP servers on 127.0.0.1): nothing they send is scored unless it is a
completion, malformed replies are retried like a 5xx, and no server can hold the run beyond its deadline."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from codefoundry.cli import run
from codefoundry.eval.generation import EndpointError, EndpointGenerator, Request, Sampling

INFO = {"model_id": "misbehaving", "max_stop_sequences": 4, "max_input_tokens": 4095, "max_total_tokens": 4096}


class Misbehaving(BaseHTTPRequestHandler):
    """`behaviours` is the list of replies to give to /generate, in order (the last one repeats)."""

    behaviours: ClassVar[list[str]] = []
    posts: ClassVar[list[float]] = []
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, data: bytes, trickle: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not trickle:
            self.wfile.write(data)
            return
        for byte in data:  # one byte a second: never a read timeout, never done
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(1.0)

    def do_GET(self) -> None:
        self._send(200, json.dumps(INFO).encode())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            n = len(self.posts)
            self.posts.append(time.monotonic())
            behaviour = self.behaviours[min(n, len(self.behaviours) - 1)]
        try:
            if behaviour == "null":
                self._send(200, b'{"generated_text": null}')
            elif behaviour == "not json":
                self._send(200, b"<html>502 Bad Gateway</html>")
            elif behaviour == "500":
                self._send(500, b'{"error": "boom"}')
            elif behaviour == "trickle":
                self._send(200, json.dumps({"generated_text": "    return 1\n" * 50}).encode(), trickle=True)
            elif behaviour == "hang":
                time.sleep(30)
            else:  # "ok"
                self._send(200, json.dumps({"generated_text": "    return a + b\n"}).encode())
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def misbehaving() -> Iterator[Callable[..., tuple[str, type[Misbehaving]]]]:
    servers = []

    def start(*behaviours: str) -> tuple[str, type[Misbehaving]]:
        handler = type("Handler", (Misbehaving,), {"behaviours": list(behaviours), "posts": [],
                                                   "lock": threading.Lock()})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", handler

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def complete(url: str, **kwargs: object) -> list[str]:
    gen = EndpointGenerator(url, backoff=0.01, **kwargs)
    return gen.complete([Request("def add(a, b):\n", ("\ndef",), 0)], Sampling(max_new_tokens=8))


def test_null_text_is_retried_and_never_scored_as_none(misbehaving) -> None:
    url, handler = misbehaving("null", "ok")
    assert complete(url) == ["    return a + b\n"]
    assert len(handler.posts) == 2
    url, handler = misbehaving("null")
    with pytest.raises(EndpointError, match=r"failed 3 times.*generated_text is null"):
        complete(url, max_retries=2)


def test_malformed_json_and_5xx_are_the_endpoints_fault_and_retried(misbehaving) -> None:
    url, handler = misbehaving("not json", "500", "ok")
    assert complete(url) == ["    return a + b\n"]
    assert len(handler.posts) == 3
    url, _ = misbehaving("not json")
    with pytest.raises(EndpointError, match=r"endpoint http://127\.0\.0\.1:\d+/generate failed 2 times.*not JSON"):
        complete(url, max_retries=1)


def test_a_trickling_server_meets_the_overall_deadline(misbehaving) -> None:
    url, handler = misbehaving("trickle")
    start = time.monotonic()
    with pytest.raises(EndpointError, match="did not answer within 2 s"):
        complete(url, timeout=2.0)
    assert time.monotonic() - start < 4.5
    assert len(handler.posts) == 1  # a missed deadline is not retried


def test_a_hung_server_costs_one_deadline_not_one_per_retry(misbehaving) -> None:
    url, handler = misbehaving("hang")
    gen = EndpointGenerator(url, backoff=0.01, timeout=1.5, max_retries=6, concurrency=2)
    requests = [Request(f"def f{i}():\n", ("\ndef",), i) for i in range(8)]
    start = time.monotonic()
    with pytest.raises(EndpointError, match=r"did not answer within 1\.5 s"):
        gen.complete(requests, Sampling(max_new_tokens=8))
    assert time.monotonic() - start < 4.0
    assert len(handler.posts) <= 3  # the queued requests were dropped, nothing was retried


def test_cli_names_the_endpoint_and_keeps_no_verdict(misbehaving, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = misbehaving("null")
    config = tmp_path / "eval.yaml"
    config.write_text("max_retries: 1\n")
    out = tmp_path / "eval"
    code = run(["eval", "--task", "humaneval", "--limit", "2", "--endpoint", url, "--out", str(out),
                "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 1 and f"error: endpoint {url}/generate failed 2 times" in err and "internal error" not in err
    assert not (out / "samples.jsonl").read_text().strip()


def test_an_unanswering_info_request_is_an_error(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(EndpointError, match="did not answer within 1 s"):
            EndpointGenerator(url, timeout=1.0)
        assert time.monotonic() - start < 3
    finally:
        listener.close()

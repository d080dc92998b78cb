"""A real HTTP server on 127.0.0.1 speaking TGI (`/info`, `/generate`) and OpenAI (`/v1/completions`).

It stands in for an external TGI or vLLM (a protocol peer, not a stand-in for our code) and
answers each prompt with the benchmark's canonical completion followed by a stop sequence and
junk, as a real model would run on; TGI keeps the stop text in `generated_text`, OpenAI drops
it. It rejects more stop sequences than its `/info` allows (422, as TGI) and can answer 503
before succeeding, to exercise retries.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

MAX_STOP = 4


@dataclass
class ProtocolPeer:
    answers: dict[str, str]                  # prompt -> completion (before the stop)
    fail_first: int = 0                      # answer 503 to the first N generation requests per prompt
    max_total_tokens: int | None = None      # TGI's length check, counting a prompt's words as its tokens
    url: str = ""
    requests: Counter[str] = field(default_factory=Counter)
    bodies: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, prompt: str, stops: list[str]) -> tuple[int, str | None]:
        with self.lock:
            self.requests[prompt] += 1
            if self.requests[prompt] <= self.fail_first:
                return 503, None
        return 200, self.answers.get(prompt, "    pass\n")


def _handler(peer: ProtocolPeer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 503:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/info":
                self._send(200, {"model_id": "canonical-peer", "max_stop_sequences": MAX_STOP,
                                 "max_input_tokens": 4095, "max_total_tokens": 4096, "max_best_of": 2})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "canonical-peer", "object": "model"}]})
            else:
                self._send(404, {"error": "not found", "error_type": "not_found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            peer.bodies.append(body)
            if self.path == "/generate":
                prompt, params = body["inputs"], body.get("parameters") or {}
                stops = params.get("stop") or []
            elif self.path == "/v1/completions":
                prompt, stops = body["prompt"], body.get("stop") or []
            else:
                return self._send(404, {"error": "not found", "error_type": "not_found"})
            if self.path == "/generate" and peer.max_total_tokens is not None:
                n, m = len(prompt.split()), params.get("max_new_tokens") or 20
                if n + m > peer.max_total_tokens:
                    return self._send(422, {"error": f"Input validation error: `inputs` tokens + `max_new_tokens` "
                                            f"must be <= {peer.max_total_tokens}. Given: {n} `inputs` tokens and "
                                            f"{m} `max_new_tokens`", "error_type": "validation"})
            if len(stops) > MAX_STOP:
                return self._send(422, {"error": f"Input validation error: `stop` supports up to {MAX_STOP} "
                                        f"stop sequences. Given: {len(stops)}", "error_type": "validation"})
            status, completion = peer.answer(prompt, stops)
            if status != 200:
                return self._send(status, {"error": "Model is overloaded", "error_type": "overloaded"})
            stop = stops[0] if stops else ""
            if self.path == "/generate":  # TGI: the stop string stays in the text; junk after it is never sent
                self._send(200, {"generated_text": completion + stop})
            else:  # OpenAI drops the stop string; send junk after a stop the server was not told about
                self._send(200, {"id": "x", "object": "text_completion", "model": "canonical-peer",
                                 "choices": [{"index": 0, "text": completion + "\nprint('junk')\n",
                                              "finish_reason": "stop", "logprobs": None}]})

    return Handler


@pytest.fixture
def protocol_peer() -> Iterator[Callable[..., ProtocolPeer]]:
    """`protocol_peer(answers, fail_first=0, max_total_tokens=None)` starts a server; returns it (`.url`, …)."""
    servers = []

    def start(answers: dict[str, str], fail_first: int = 0, max_total_tokens: int | None = None) -> ProtocolPeer:
        peer = ProtocolPeer(answers, fail_first, max_total_tokens)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(peer))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        peer.url = f"http://127.0.0.1:{server.server_address[1]}"
        return peer

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()

"""Start-up, warmup and shutdown: start the engine (its own process by default), then listen; drain on SIGTERM.

    state = build_state(ServeConfig(model=Path("model/")))   # engine process up, pool sized, warmed up
    serve(cfg)                                               # the CLI: blocks until SIGTERM/SIGINT, exit 0

The engine core (scheduler, KV cache, model runner, sampler) runs in its own process, as
vLLM v1's does, unless `cfg.engine_process` is False (then on a thread of this process);
`engine_builder.build_engine` loads the model and warms up there (TGI's order), and this
process derives its limits from what it reports. The socket is bound only after. If the
engine process dies, requests fail with 503 and `serve` exits non-zero.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from codefoundry.console import console
from codefoundry.errors import UserError
from codefoundry.serve.app import create_app
from codefoundry.serve.config import ServeConfig
from codefoundry.serve.engine_builder import EngineInfo, build_engine, build_engine_for_process
from codefoundry.serve.engine_loop import EngineLoop
from codefoundry.serve.metrics import Metrics
from codefoundry.serve.routes.adapters import publish as publish_adapters
from codefoundry.serve.schemas import Info
from codefoundry.serve.state import EngineBackend, ServerState
from codefoundry.serve.tracing import make_tracer_provider
from codefoundry.serve.validation import Limits, Validator

log = logging.getLogger(__name__)


def _limits(cfg: ServeConfig, info: EngineInfo) -> tuple[int, int, int]:
    """(pool tokens, max_total_tokens, max_input_tokens), checked against the model and the pool."""
    pool_tokens = info.num_blocks * info.block_size
    max_total = cfg.max_total_tokens or min(info.n_positions, pool_tokens)
    max_input = cfg.max_input_tokens or max_total - 1
    if max_total > info.n_positions:
        raise UserError(f"--max-total-tokens {max_total} exceeds the model's n_positions {info.n_positions}")
    if max_total > pool_tokens:
        raise UserError(f"--max-total-tokens {max_total} exceeds the KV pool of {pool_tokens} tokens",
                        "raise --max-batch-total-tokens or lower --max-total-tokens")
    if max_input >= max_total:
        raise UserError(f"--max-input-tokens ({max_input}) must be < --max-total-tokens ({max_total})")
    return pool_tokens, max_total, max_input


def _start_engine(cfg: ServeConfig) -> tuple[EngineBackend, EngineInfo, Any]:
    """The engine back end (not yet reading), what it reported, and the tokenizer for this process."""
    from codefoundry.model import resolve_model_path
    from codefoundry.tokenizer import load_tokenizer

    if cfg.engine_process:
        from codefoundry.serve.engine_client import EngineClient

        client = EngineClient(build_engine_for_process, (cfg.model_dump(mode="json"),))
        return client, EngineInfo(**client.info), load_tokenizer(resolve_model_path(cfg.model))
    engine, info = build_engine(cfg)
    return EngineLoop(engine), info, engine.tokenizer


def build_state(cfg: ServeConfig, span_processor: Any = None) -> ServerState:
    """Start the engine (load, warm up), and return the (ready) server state with the engine running."""
    from codefoundry.model import resolve_model_path

    if cfg.model is None:
        raise UserError("no model given", "pass --model DIR (a model/ artifact in HF format)")
    model_id = cfg.model_id or Path(cfg.model).resolve().name
    # the engine reads a .gguf file itself (a Q4 file's own 4-bit blocks), with the quantization decided once
    # here; the routes see the directory it imports to, imported once here (not by the engine process too)
    engine_cfg = cfg.model_copy(update={"model_id": model_id, "quantize": cfg.served_quantize or "none"})
    cfg = cfg.model_copy(update={"model": resolve_model_path(cfg.model), "model_id": model_id})
    backend, info, tokenizer = _start_engine(engine_cfg)
    try:
        pool_tokens, max_total, max_input = _limits(cfg, info)
    except UserError:
        backend.stop()
        raise
    log.info("Setting max batch total tokens to %d (%d blocks); warmup prefill of %d tokens took %.2fs",
             pool_tokens, info.num_blocks, info.prefill_tokens, info.warmup_seconds)
    metrics = Metrics(max_input, max_total)
    metrics.batch_max_total_tokens.set(pool_tokens)
    backend.start(metrics)
    info_body = Info(model_id=model_id, model_dtype=info.dtype, model_device_type=info.device_type,
                     quantize=info.quantize,
                     max_concurrent_requests=cfg.max_concurrent_requests, max_stop_sequences=cfg.max_stop_sequences,
                     max_input_tokens=max_input, max_total_tokens=max_total, max_batch_total_tokens=pool_tokens,
                     max_batch_prefill_tokens=cfg.max_batch_prefill_tokens,
                     max_client_batch_size=cfg.max_client_batch_size)
    validator = Validator(tokenizer, Limits(max_input, max_total, cfg.max_stop_sequences, cfg.max_top_n_tokens),
                          model_id=model_id)
    state = ServerState(config=cfg, tokenizer=tokenizer, validator=validator, engine_loop=backend, metrics=metrics,
                        info=info_body, tracer_provider=make_tracer_provider(cfg.otlp_endpoint, span_processor))
    publish_adapters(state, info.adapters)
    state.ready = True
    return state


class _DrainingServer(uvicorn.Server):
    """uvicorn whose first SIGTERM drains: health 503, no new requests, exit once in-flight ones finish."""

    def __init__(self, config: uvicorn.Config, state: ServerState, grace_period_s: float) -> None:
        super().__init__(config)
        self.state, self.grace_period_s = state, grace_period_s

    def handle_exit(self, sig: int, frame: Any) -> None:
        if sig == signal.SIGTERM and not self.state.draining:
            self.state.draining = True
            threading.Thread(target=self._drain, daemon=True).start()
            return
        super().handle_exit(sig, frame)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.grace_period_s
        while self.state.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.should_exit = True


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
    # a response written in two parts (headers, body) waits for the client's delayed ACK, about 40 ms
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}", "pick another --port") from None
    sock.listen(2048)
    return sock


def make_server(state: ServerState, grace_period_s: float = 30.0) -> _DrainingServer:
    config = uvicorn.Config(create_app(state), log_level="warning", access_log=False,
                            timeout_graceful_shutdown=max(int(grace_period_s), 1), lifespan="off")
    return _DrainingServer(config, state, grace_period_s)


def serve(cfg: ServeConfig) -> None:
    """Warm up, listen on cfg.host:cfg.port until SIGTERM (drain) or Ctrl-C; returns normally (exit 0)."""
    with console.status(f"loading {cfg.model} and warming up"):
        state = build_state(cfg)
    sock = bind(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    console.print(f"serving {state.model_id} on http://{host}:{port} "
                  f"(KV pool {state.info.max_batch_total_tokens} tokens, "
                  f"max_total_tokens {state.info.max_total_tokens})")
    server = make_server(state, cfg.grace_period_s)
    backend = state.engine_loop
    if hasattr(backend, "on_death"):         # the engine process died: its requests failed; stop serving
        backend.on_death.append(lambda: setattr(server, "should_exit", True))
    try:
        server.run(sockets=[sock])
    finally:
        exitcode = backend.stop()
        if state.tracer_provider is not None:
            state.tracer_provider.shutdown()
    if getattr(backend, "dead", False) or exitcode not in (None, 0):
        from codefoundry.serve.engine_client import EngineProcessDied, describe_exit

        raise EngineProcessDied(f"the engine process died ({describe_exit(exitcode)})",
                                "its log lines above say why")


@dataclass
class RunningServer:
    """A server on a background thread (tests, benchmarks, the demo)."""

    state: ServerState
    server: _DrainingServer
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.state.engine_loop.stop()
        if self.state.tracer_provider is not None:
            self.state.tracer_provider.shutdown()         # flushes spans to the OTLP endpoint


def start_in_thread(cfg: ServeConfig, span_processor: Any = None) -> RunningServer:
    """Build, warm up and serve on a background thread; `cfg.port` 0 picks a free port."""
    state = build_state(cfg, span_processor)
    sock = bind(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    server = make_server(state, cfg.grace_period_s)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="codefoundry-http")
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the HTTP server thread exited during start-up")
        time.sleep(0.01)
    return RunningServer(state, server, thread, f"http://{host}:{port}")

"""Start-up, warmup and shutdown: load the model, size the KV pool, warm up, then listen; drain on SIGTERM.

    state = build_state(ServeConfig(model=Path("model/")))   # loads, sizes the pool, runs a maximal prefill
    serve(cfg)                                               # the CLI: blocks until SIGTERM/SIGINT, exit 0

Warmup follows TGI: one forward at the full prefill budget first (a too-large budget fails
here, not under load), then the KV pool takes `memory_fraction` of the memory still free
(on CPU: of available RAM, capped by `cpu_kv_cache_bytes`). The socket is bound only after.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import uvicorn

from codefoundry.console import console
from codefoundry.errors import UserError
from codefoundry.generate import Engine
from codefoundry.serve.app import create_app
from codefoundry.serve.config import ServeConfig
from codefoundry.serve.engine_loop import EngineLoop, warmup
from codefoundry.serve.metrics import Metrics
from codefoundry.serve.routes.adapters import publish as publish_adapters
from codefoundry.serve.schemas import Info
from codefoundry.serve.state import ServerState
from codefoundry.serve.tracing import make_tracer_provider
from codefoundry.serve.validation import Limits, Validator

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # ServeConfig.dtype's values


def _free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1 << 30


def size_kv_pool(cfg: ServeConfig, model_config: Any, dtype: torch.dtype, device: torch.device) -> int:
    """Blocks in the KV pool: `--max-batch-total-tokens` if given, else what the free memory holds."""
    from codefoundry.model import kv_cache_bytes_per_block

    if cfg.max_batch_total_tokens is not None:
        return -(-cfg.max_batch_total_tokens // cfg.block_size)
    per_block = kv_cache_bytes_per_block(model_config, cfg.block_size, dtype)
    budget = int(_free_memory_bytes(device) * cfg.memory_fraction)
    if device.type != "cuda":
        budget = min(budget, cfg.cpu_kv_cache_bytes)
    return max(budget // per_block, 1)


def build_state(cfg: ServeConfig, span_processor: Any = None) -> ServerState:
    """Load the model and tokenizer, warm up, and return the (ready) server state with its engine thread running."""
    from codefoundry.model import load_model, resolve_model_path
    from codefoundry.tokenizer import load_tokenizer

    if cfg.model is None:
        raise UserError("no model given", "pass --model DIR (a model/ artifact in HF format)")
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[cfg.dtype] if cfg.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model_dir = resolve_model_path(cfg.model)        # a .gguf file: the directory it imports to
    model = load_model(model_dir, dtype=dtype, device=device, quantize=cfg.quantize)
    tokenizer = load_tokenizer(model_dir)
    n_positions = model.config.n_positions

    # 1. a maximal prefill on a pool just big enough for it (TGI: fail early on a too-large prefill budget)
    prefill = min(cfg.max_batch_prefill_tokens, n_positions - 1, cfg.max_input_tokens or n_positions)
    probe = Engine(model, tokenizer, num_blocks=-(-(prefill + 1) // cfg.block_size), block_size=cfg.block_size,
                   max_batch_tokens=cfg.max_batch_prefill_tokens)
    try:
        warmup(probe, prefill)
    except torch.OutOfMemoryError:
        raise UserError(f"Not enough memory to handle {prefill} prefill tokens. "
                        "You need to decrease `--max-batch-prefill-tokens`") from None
    del probe
    if device.type == "cuda":
        torch.cuda.empty_cache()
    # 2. the pool from what is left, then the limits it implies
    num_blocks = size_kv_pool(cfg, model.config, dtype, device)
    pool_tokens = num_blocks * cfg.block_size
    max_total = cfg.max_total_tokens or min(n_positions, pool_tokens)
    max_input = cfg.max_input_tokens or max_total - 1
    if max_total > n_positions:
        raise UserError(f"--max-total-tokens {max_total} exceeds the model's n_positions {n_positions}")
    if max_total > pool_tokens:
        raise UserError(f"--max-total-tokens {max_total} exceeds the KV pool of {pool_tokens} tokens",
                        "raise --max-batch-total-tokens or lower --max-total-tokens")
    if max_input >= max_total:
        raise UserError(f"--max-input-tokens ({max_input}) must be < --max-total-tokens ({max_total})")
    engine = Engine(model, tokenizer, num_blocks=num_blocks, block_size=cfg.block_size,
                    max_batch_tokens=cfg.max_batch_prefill_tokens,
                    max_batch_size=max(cfg.max_concurrent_requests * cfg.max_client_batch_size, 1),
                    enable_prefix_caching=cfg.enable_prefix_caching)
    seconds = warmup(engine, prefill)
    model_id = cfg.model_id or Path(cfg.model).resolve().name
    for name, path in cfg.adapters.items():
        if name == model_id:
            raise UserError(f"--adapter {name}=…: the name is the base model's", "pick another adapter name")
        engine.add_adapter(name, str(path))
    log.info("Setting max batch total tokens to %d (%d blocks); warmup prefill of %d tokens took %.2fs",
             pool_tokens, num_blocks, prefill, seconds)
    metrics = Metrics(max_input, max_total)
    metrics.batch_max_total_tokens.set(pool_tokens)
    loop = EngineLoop(engine, metrics)
    info = Info(model_id=model_id, model_dtype=str(dtype).removeprefix("torch."),
                model_device_type=device.type, max_concurrent_requests=cfg.max_concurrent_requests,
                max_stop_sequences=cfg.max_stop_sequences, max_input_tokens=max_input, max_total_tokens=max_total,
                max_batch_total_tokens=pool_tokens, max_batch_prefill_tokens=cfg.max_batch_prefill_tokens,
                max_client_batch_size=cfg.max_client_batch_size)
    validator = Validator(tokenizer, Limits(max_input, max_total, cfg.max_stop_sequences, cfg.max_top_n_tokens),
                          model_id=model_id)
    state = ServerState(config=cfg, tokenizer=tokenizer, validator=validator, engine_loop=loop, metrics=metrics,
                        info=info, tracer_provider=make_tracer_provider(cfg.otlp_endpoint, span_processor))
    publish_adapters(state, engine.adapters())
    loop.start()
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
    try:
        server.run(sockets=[sock])
    finally:
        state.engine_loop.stop()
        if state.tracer_provider is not None:
            state.tracer_provider.shutdown()


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

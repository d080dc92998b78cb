"""Where completions come from: a local model (the generation core) or an HTTP endpoint.

Endpoints speak TGI (`POST /generate`, `GET /info` for `max_stop_sequences`) or the OpenAI
completions API (`POST /v1/completions`), so our server, a real TGI and vLLM are scored the
same way. Requests run `concurrency` at a time and are retried on 429 and 5xx, dropped
connections and malformed replies (not JSON, no text) with exponential backoff, honouring
`Retry-After`. Each request has an overall deadline (`timeout`: every read and write is
clipped to it, so a server that trickles bytes cannot stretch it); a request that misses it
is not retried (a hung server stays hung) and ends the run with an error naming the
endpoint. Nothing an endpoint returns is scored unless it is a completion string. The stop sequences sent are
capped at what the endpoint accepts; the harness always cuts at the first stop itself
(TGI keeps the stop text, OpenAI drops it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpcore
import httpx

from codefoundry.errors import UserError

RETRY_STATUS = (429, 500, 502, 503, 504)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the progress bar
OPENAI_MAX_STOP = 4  # OpenAI's completions API accepts at most 4 stop sequences


@dataclass(frozen=True)
class Request:
    """One completion to make."""

    prompt: str
    stop: tuple[str, ...]
    seed: int
    adapter: str | None = None     # a LocalGenerator's adapter name (None: the base model)


@dataclass(frozen=True)
class Sampling:
    """Sampling settings shared by every request of a run."""

    temperature: float = 0.2      # bigcode-evaluation-harness default
    top_p: float = 0.95           # bigcode-evaluation-harness default
    max_new_tokens: int = 512


class EndpointError(UserError):
    """The endpoint failed (unreachable, hung, errors, malformed replies): nothing of it is scored."""


class _DeadlineExceeded(Exception):
    pass


_deadline = threading.local()


def _clip(timeout: float | None) -> float | None:
    """`timeout` cut to what is left of this thread's request deadline."""
    end = getattr(_deadline, "at", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clip(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clip(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _clip(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.SyncBackend):
    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(super().connect_tcp(host, port, _clip(timeout), local_address, socket_options))


def _deadline_transport(limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's transport over a network backend that honours per-request deadlines (httpx's own
    timeouts are per read: a byte a second never trips them). httpx has no public hook for it."""
    transport = httpx.HTTPTransport(limits=limits)
    transport._pool = httpcore.ConnectionPool(
        max_connections=limits.max_connections, max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry, network_backend=_DeadlineBackend())
    return transport


class Generator(Protocol):
    def describe(self) -> dict[str, Any]: ...
    def complete(self, requests: list[Request], sampling: Sampling) -> list[str]: ...


class EndpointGenerator:
    """Completions from a TGI or OpenAI-compatible server."""

    def __init__(self, url: str, api: str = "tgi", api_key: str | None = None, concurrency: int = 8,
                 max_retries: int = 6, timeout: float = 600.0, model_name: str | None = None,
                 backoff: float = 0.5) -> None:
        if api not in ("tgi", "openai"):
            raise UserError(f"--api must be 'tgi' or 'openai', given {api!r}")
        self.url = url.rstrip("/")
        if api == "openai" and self.url.endswith("/v1"):
            self.url = self.url[: -len("/v1")]
        self.api, self.concurrency, self.max_retries, self.backoff = api, max(1, concurrency), max_retries, backoff
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency)
        self.client = httpx.Client(headers=headers, timeout=timeout, transport=_deadline_transport(limits))
        self.info = self._info()
        self.model_name = model_name or self.info.get("model_id") or "tgi"
        self.max_stop = int(self.info.get("max_stop_sequences") or OPENAI_MAX_STOP)
        self.max_input = self.info.get("max_input_tokens") or self.info.get("max_input_length")  # TGI < 2.1

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.url, "api": self.api, "info": self.info}

    def _info(self) -> dict[str, Any]:
        path = "/info" if self.api == "tgi" else "/v1/models"
        try:
            _deadline.at = time.monotonic() + min(self.timeout, 60.0)
            r = self.client.get(self.url + path)
            r.read()
        except httpx.TimeoutException:
            raise EndpointError(f"endpoint {self.url}{path} did not answer within {min(self.timeout, 60.0):g} s",
                                "is the server hung? check --endpoint") from None
        except httpx.HTTPError as e:
            raise EndpointError(f"endpoint {self.url} cannot be reached: {e}",
                                "is the server running? check --endpoint") from None
        finally:
            _deadline.at = None
        if r.status_code != 200:
            if self.api == "openai":
                return {}
            raise UserError(f"endpoint {self.url}{path} answered HTTP {r.status_code}",
                            "is it a TGI server? for an OpenAI-compatible one use --api openai")
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise EndpointError(f"endpoint {self.url}{path} answered a malformed reply (not a JSON object): "
                                f"{r.text[:200]!r}")
        if self.api == "openai":
            models = data.get("data") or []
            return {"model_id": models[0].get("id")} if models and isinstance(models[0], dict) else {}
        return data

    def _body(self, req: Request, sampling: Sampling) -> tuple[str, dict[str, Any]]:
        stop = list(req.stop[: self.max_stop])
        greedy = sampling.temperature <= 0
        if self.api == "tgi":
            params: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "stop": stop,
                                      "do_sample": not greedy, "return_full_text": False, "details": False}
            if self.max_input:  # a prompt longer than the server takes keeps its end, as LocalGenerator's
                params["truncate"] = self.max_input
            if not greedy:  # TGI rejects temperature 0 and top_p 1.0
                params["temperature"] = sampling.temperature
                params["seed"] = req.seed
                if sampling.top_p < 1.0:
                    params["top_p"] = sampling.top_p
            return "/generate", {"inputs": req.prompt, "parameters": params}
        body = {"model": self.model_name, "prompt": req.prompt, "max_tokens": sampling.max_new_tokens,
                "temperature": max(sampling.temperature, 0.0), "top_p": sampling.top_p, "stop": stop,
                "seed": req.seed, "n": 1}
        return "/v1/completions", body

    def _post(self, url: str, body: dict[str, Any]) -> httpx.Response:
        """One POST, whole reply read, within `self.timeout` seconds from start to end."""
        _deadline.at = time.monotonic() + self.timeout
        try:
            r = self.client.post(url, json=body)
            r.read()
            return r
        except httpx.TimeoutException:
            raise _DeadlineExceeded from None
        finally:
            _deadline.at = None

    def _one(self, req: Request, sampling: Sampling) -> str:
        path, body = self._body(req, sampling)
        url = self.url + path
        attempt = 0
        while True:
            retry_after = None
            try:
                r = self._post(url, body)
            except _DeadlineExceeded:
                raise EndpointError(f"endpoint {url} did not answer within {self.timeout:g} s",
                                    "is the server hung or overloaded? raise request_timeout, or check it") from None
            except httpx.TransportError as e:
                problem = f"connection failed ({type(e).__name__}: {e})"
            else:
                fit = _fit_max_new_tokens(r) if r.status_code == 422 else None
                if fit is not None and self.api == "tgi" and body["parameters"]["max_new_tokens"] > fit:
                    body["parameters"]["max_new_tokens"] = fit  # a long prompt: use what the server has room for
                    continue
                if r.status_code == 200:
                    text, problem = _completion_text(r, self.api)
                    if text is not None:
                        return text
                elif r.status_code in RETRY_STATUS:
                    problem, retry_after = f"HTTP {r.status_code}: {r.text[:200]}", r.headers.get("retry-after")
                else:
                    raise EndpointError(f"endpoint {url} answered HTTP {r.status_code}: {r.text[:300]}")
            if attempt >= self.max_retries:
                raise EndpointError(f"endpoint {url} failed {attempt + 1} times; the last: {problem}")
            self._sleep(attempt, retry_after)
            attempt += 1

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        try:
            delay = float(retry_after) if retry_after is not None else None
        except ValueError:
            delay = None
        if delay is None:
            delay = self.backoff * 2**attempt * (1 + random.random() / 2)
        time.sleep(min(delay, 60.0))

    def complete(self, requests: list[Request], sampling: Sampling) -> list[str]:
        failed = threading.Event()

        def one(req: Request) -> str:
            if failed.is_set():  # another request failed: this run ends, send nothing more
                raise _DeadlineExceeded
            try:
                return self._one(req, sampling)
            except BaseException:
                failed.set()
                raise

        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="endpoint")
        futures: list[Future[str]] = [pool.submit(one, r) for r in requests]
        try:
            return [f.result() for f in futures]
        finally:  # on the first failure, requests not yet sent are dropped (those in flight end by their deadline)
            pool.shutdown(wait=True, cancel_futures=True)


def _completion_text(r: httpx.Response, api: str) -> tuple[str | None, str]:
    """(the completion, "") from a 200 reply, or (None, what is wrong with it)."""
    try:
        data = r.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return None, f"malformed reply (not JSON): {r.text[:200]!r}"
    try:
        if api == "tgi":
            data = data[0] if isinstance(data, list) else data
            text = data["generated_text"]
            where = "generated_text"
        else:
            text = data["choices"][0]["text"]
            where = "choices[0].text"
    except (KeyError, IndexError, TypeError):
        return None, f"malformed reply (no completion in it): {r.text[:200]!r}"
    if not isinstance(text, str):
        return None, f"malformed reply ({where} is {json.dumps(text)})"
    return text, ""


def _fit_max_new_tokens(r: httpx.Response) -> int | None:
    """From TGI's 422 "`inputs` tokens + `max_new_tokens` must be <= T. Given: n `inputs` tokens …": T - n."""
    m = re.search(r"must be <= (\d+)\. Given: (\d+) `inputs` tokens", r.text)
    return int(m.group(1)) - int(m.group(2)) if m and int(m.group(1)) > int(m.group(2)) else None


class LocalGenerator:
    """Completions from a model directory through `codefoundry.generate` (batched, paged KV cache).

    `adapter` is folded into the weights (every request uses it); `adapters` (name → PEFT directory) are
    served beside the base instead, in the same batch, each request naming its own (`Request.adapter`).
    """

    def __init__(self, model_dir: Path, device: str = "cpu", quantize: str | None = None,
                 adapter: Path | None = None, adapters: dict[str, Path] | None = None,
                 dtype: str = "float32") -> None:
        import torch

        from codefoundry.model import load_model
        from codefoundry.tokenizer import load_tokenizer

        self.model_dir, self.adapter, self.adapters = model_dir, adapter, dict(adapters or {})
        torch_dtype = getattr(torch, dtype)
        if adapter is None:
            self.model = load_model(model_dir, dtype=torch_dtype, device=device, quantize=quantize)
        else:
            self.model = with_adapter(load_model(model_dir, dtype=torch_dtype, device=device), adapter, quantize)
        self.model.eval()
        self.tokenizer = load_tokenizer(model_dir)

    def describe(self, adapter: str | None = None) -> dict[str, Any]:
        """The source of completions made with `adapter` (one of `adapters`; None: the model as loaded)."""
        folded = self.adapter if adapter is None else self.adapters[adapter]
        return {"model": str(self.model_dir.resolve()), **({"adapter": str(folded.resolve())} if folded else {})}

    def complete(self, requests: list[Request], sampling: Sampling) -> list[str]:
        texts: dict[int, str] = {}
        self.stream([(r, sampling) for r in requests], texts.__setitem__)
        return [texts[i] for i in range(len(requests))]

    def stream(self, requests: list[tuple[Request, Sampling]], on_done: Callable[[int, str], None]) -> None:
        """Complete every request in one continuous batch; `on_done(index, text)` as each one finishes
        (so its program runs while the others still generate)."""
        from codefoundry.generate import Engine, SamplingParams
        from codefoundry.generate.engine import DEFAULT_KV_CACHE_BYTES
        from codefoundry.model import kv_cache_bytes_per_block

        if not requests:
            return
        limit, block = self.model.config.n_positions, 16
        engine_inputs = []
        for req, sampling in requests:
            ids = list(self.tokenizer.encode(req.prompt))
            if len(ids) >= limit:  # keep the prompt's end (what EndpointGenerator asks TGI with `truncate`)
                ids = ids[-(limit - 1):]
            # the whole prompt, and what room it leaves, as a TGI endpoint answers (max_total_tokens)
            room = min(sampling.max_new_tokens, limit - len(ids))
            params = SamplingParams.from_openai(temperature=sampling.temperature, top_p=sampling.top_p,
                                                max_new_tokens=room, stop=req.stop, seed=req.seed)
            engine_inputs.append((ids, dataclasses.replace(params, adapter_id=req.adapter)))
        full = [math.ceil((len(ids) + p.max_new_tokens) / block) for ids, p in engine_inputs]
        dtype = next(self.model.parameters()).dtype
        cap = DEFAULT_KV_CACHE_BYTES // kv_cache_bytes_per_block(self.model.config, block, dtype)
        engine = Engine(self.model, self.tokenizer, num_blocks=max(min(sum(full), cap), max(full)), block_size=block)
        try:
            for name, path in self.adapters.items():
                engine.add_adapter(name, str(path))
            for i, (ids, params) in enumerate(engine_inputs):
                engine.add_request(i, ids, params)
            while engine.has_unfinished():
                for event in engine.step().outputs:
                    if event.completion is not None:
                        on_done(int(event.request_id), event.completion.text)
        finally:
            engine.lora.layers.detach()       # the model is the base model again


def with_adapter(model: Any, adapter: Path, quantize: str | None = None) -> Any:
    """`model` with the LoRA `adapter` folded into its weights in memory (what `finetune merge` saves, without
    writing it), then quantized when asked."""
    from codefoundry.finetune.lora import open_adapter

    merged = open_adapter(model, adapter).merge_and_unload()
    if quantize:
        from codefoundry.model.quantize import quantize_model

        merged = quantize_model(merged, quantize)
    return merged

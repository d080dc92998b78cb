"""The HTTP layer: TGI routes, OpenAI routes, auth, limits, CORS, metrics; it validates and forwards to the engine loop.

Nothing here computes: a route turns its body into `ValidRequest`s (validation.py), admits
them under `max_concurrent_requests`, reads the engine loop's `StepOutput`s and shapes them
(responses.py). Every failure goes through `ServeError` (errors.py), one mapping to
status + `{"error", "error_type"}`; on `/generate_stream` it becomes the last SSE event.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry.sdk.trace import TracerProvider

from codefoundry import __version__
from codefoundry.generate import Completion, StepOutput
from codefoundry.serve import responses as R
from codefoundry.serve.engine_loop import EngineLoop
from codefoundry.serve.errors import OVERLOADED, ServeError, validation
from codefoundry.serve.metrics import Metrics
from codefoundry.serve.schemas import (
    ChatRequest,
    CompatGenerateRequest,
    CompletionRequest,
    ErrorBody,
    GenerateParameters,
    GenerateRequest,
    GenerateResponse,
    Info,
    SimpleToken,
)
from codefoundry.serve.tracing import RequestTimes, record_request_spans
from codefoundry.serve.validation import Limits, Validator, ValidRequest, check_prompt_count

log = logging.getLogger(__name__)

# Used when the tokenizer has no chat template: a plain instruction/response layout (StarCoder2-Instruct style).
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### Instruction\n{{ m['content'] }}\n\n"
    "{% else %}### Response\n{{ m['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}### Response\n{% endif %}"
)
STREAM_HEADERS = {"x-compute-type": "cpu+optimized", "X-Accel-Buffering": "no", "Cache-Control": "no-cache"}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Input validation error"},
    424: {"model": ErrorBody, "description": "Generation error"},
    429: {"model": ErrorBody, "description": "Model is overloaded"},
}


@dataclass
class ServerState:
    """Everything the routes need; built (and warmed up) by `server.build_state`."""

    model_id: str
    tokenizer: Any
    validator: Validator
    engine_loop: EngineLoop
    metrics: Metrics
    info: dict[str, Any]
    api_key: str | None = None
    max_concurrent_requests: int = 128
    max_client_batch_size: int = 4
    payload_limit: int = 2_000_000
    cors_allow_origin: list[str] = field(default_factory=list)
    tracer_provider: TracerProvider | None = None
    compute_type: str = "cpu+optimized"
    log_prompts: bool = False
    ready: bool = False
    draining: bool = False
    in_flight: int = 0

    @property
    def limits(self) -> Limits:
        return self.validator.limits

    @contextmanager
    def admit(self, route: str):
        """Count a request in flight; 429 beyond max_concurrent_requests, 503 while shutting down."""
        self.metrics.request_count.inc()
        if self.draining:
            raise ServeError("shutting_down", "the server is shutting down")
        if self.in_flight >= self.max_concurrent_requests:
            self.metrics.request_failure.labels(err="overloaded").inc()
            raise ServeError("overloaded", OVERLOADED)
        self.in_flight += 1
        try:
            yield
        except ServeError as e:
            self.metrics.request_failure.labels(err=e.error_type).inc()
            raise
        else:
            self.metrics.request_success.inc()
        finally:
            self.in_flight -= 1


def _record(state: ServerState, route: str, valid: ValidRequest, c: Completion, t: RequestTimes) -> None:
    m = state.metrics
    end = t.done or time.time_ns()
    m.request_duration.observe((end - t.start) / 1e9)
    m.request_validation_duration.observe((t.validated - t.start) / 1e9)
    if t.scheduled:
        m.request_queue_duration.observe(max(t.scheduled - t.validated, 0) / 1e9)
        m.request_inference_duration.observe(max(end - t.scheduled, 0) / 1e9)
        m.request_mean_time_per_token_duration.observe(max(end - t.scheduled, 0) / 1e9 / max(c.generated_tokens, 1))
    if t.first_token:
        m.request_time_to_first_token.observe(max(t.first_token - t.start, 0) / 1e9)
    m.request_input_length.observe(len(valid.input_ids))
    m.request_generated_tokens.observe(c.generated_tokens)
    m.request_max_new_tokens.observe(valid.params.max_new_tokens)
    t.attributes.update({"input_length": len(valid.input_ids), "generated_tokens": c.generated_tokens,
                         "finish_reason": str(c.finish_reason)})
    record_request_spans(state.tracer_provider, route, t)


async def _events(state: ServerState, valid: ValidRequest, t: RequestTimes) -> AsyncIterator[StepOutput]:
    async for out in state.engine_loop.submit(valid, t):
        yield out


async def _complete(state: ServerState, request: Request, valid: ValidRequest, t: RequestTimes) -> Completion:
    """Run one request to completion; a client that disconnects first aborts it (its blocks are freed)."""
    async def run() -> Completion:
        async for out in _events(state, valid, t):
            if out.completion is not None:
                return out.completion
        raise ServeError("generation", "the engine stopped without finishing the request")

    task = asyncio.ensure_future(run())

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.25)

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ServeError("generation", "client disconnected")
    return task.result()


def _timing_headers(state: ServerState, valid: ValidRequest, c: Completion, t: RequestTimes,
                    text: str) -> dict[str, str]:
    end = t.done or time.time_ns()
    sched = t.scheduled or t.validated
    ms = lambda a, b: str(max(b - a, 0) // 1_000_000)  # noqa: E731
    return {"x-compute-type": state.compute_type, "x-compute-time": f"{(end - t.start) / 1e9:.6f}",
            "x-compute-characters": str(len(valid.inputs)), "x-total-time": ms(t.start, end),
            "x-validation-time": ms(t.start, t.validated), "x-queue-time": ms(t.validated, sched),
            "x-inference-time": ms(sched, end),
            "x-time-per-token": str(max(end - sched, 0) // 1_000_000 // max(c.generated_tokens, 1)),
            "x-prompt-tokens": str(len(valid.input_ids)), "x-generated-tokens": str(c.generated_tokens)}


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="codefoundry serve", version=__version__, docs_url="/docs",
                  openapi_url="/api-doc/openapi.json",
                  description="TGI- and OpenAI-compatible text generation with continuous batching.")
    app.state.serve = state
    app.add_middleware(CORSMiddleware, allow_origins=state.cors_allow_origin or ["*"],
                       allow_methods=["GET", "POST"], allow_headers=["Content-Type"])

    @app.middleware("http")
    async def payload_limit(request: Request, call_next: Callable) -> Response:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > state.payload_limit:
            return ServeError("payload_too_large", f"payload of {size} bytes exceeds the limit of "
                                                   f"{state.payload_limit} bytes").response()
        return await call_next(request)

    @app.exception_handler(ServeError)
    async def on_serve_error(request: Request, e: ServeError) -> JSONResponse:
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def on_bad_body(request: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid body"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        state.metrics.request_failure.labels(err="validation").inc()
        return validation(f"{where}: {first.get('msg')}").response()

    def auth(request: Request) -> None:
        if state.api_key is None:
            return
        got = request.headers.get("authorization", "")
        if got.lower() != f"bearer {state.api_key}".lower():
            raise _Unauthorized()

    @app.exception_handler(_Unauthorized)
    async def on_unauthorized(request: Request, e: Exception) -> Response:
        return Response(status_code=401)

    protected = [Depends(auth)]

    def validate(inputs: str, params: GenerateParameters | None, stream: bool) -> tuple[ValidRequest, RequestTimes]:
        t = RequestTimes(start=time.time_ns())
        valid = state.validator.validate(inputs, params, stream=stream)
        t.validated = time.time_ns()
        if state.log_prompts:
            log.info("prompt: %r", inputs)
        return valid, t

    async def generate_json(request: Request, body: GenerateRequest, route: str) -> tuple[dict, dict]:
        with state.admit(route):
            valid, t = validate(body.inputs, body.parameters, stream=False)
            c = await _complete(state, request, valid, t)
            _record(state, route, valid, c, t)
        payload = R.tgi_generate(valid, c, state.tokenizer, state.engine_loop.engine.special_ids)
        return payload, _timing_headers(state, valid, c, t, payload["generated_text"])

    def tgi_stream(body: GenerateRequest, route: str) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            try:
                with state.admit(route):
                    valid, t = validate(body.inputs, body.parameters, stream=True)
                    special = state.engine_loop.engine.special_ids
                    index = 0
                    async for out in _events(state, valid, t):
                        index += 1
                        yield R.tgi_stream_event(index, valid, out, state.tokenizer, special)
                        if out.completion is not None:
                            _record(state, route, valid, out.completion, t)
            except ServeError as e:
                yield e.sse()
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={**STREAM_HEADERS, "x-compute-type": state.compute_type})

    # ---- TGI routes ----

    @app.post("/", dependencies=protected, response_model=list[GenerateResponse], responses=ERROR_RESPONSES,
              summary="Generate (TGI compat): a list, or SSE when stream is true")
    async def compat_generate(request: Request, body: CompatGenerateRequest) -> Response:
        if body.stream:
            return tgi_stream(body, "generate_stream")
        payload, headers = await generate_json(request, body, "generate")
        return JSONResponse([payload], headers=headers)

    @app.post("/generate", dependencies=protected, response_model=GenerateResponse, responses=ERROR_RESPONSES,
              summary="Generate tokens")
    async def generate(request: Request, body: GenerateRequest) -> Response:
        payload, headers = await generate_json(request, body, "generate")
        return JSONResponse(payload, headers=headers)

    @app.post("/generate_stream", dependencies=protected, responses=ERROR_RESPONSES,
              summary="Generate a stream of tokens (SSE; errors arrive as a final error event)")
    async def generate_stream(body: GenerateRequest) -> StreamingResponse:
        return tgi_stream(body, "generate_stream")

    @app.post("/tokenize", dependencies=protected, response_model=list[SimpleToken], responses=ERROR_RESPONSES,
              summary="Tokenize inputs (byte offsets)")
    async def tokenize(body: GenerateRequest) -> list[dict[str, Any]]:
        if not body.inputs:
            raise validation("`inputs` cannot be empty")
        enc = state.tokenizer(body.inputs, add_special_tokens=False, return_offsets_mapping=True)
        out = []
        for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
            start = len(body.inputs[:a].encode())
            out.append({"id": tid, "text": body.inputs[a:b], "start": start,
                        "stop": start + len(body.inputs[a:b].encode())})
        return out

    @app.get("/info", response_model=Info, summary="Model and router limits")
    async def info() -> dict[str, Any]:
        return state.info

    @app.get("/health", summary="200 when ready, 503 otherwise")
    @app.get("/ping", include_in_schema=False)
    @app.get("/", include_in_schema=False)
    async def health() -> Response:
        if not state.ready or state.draining:
            return JSONResponse({"error": "unhealthy", "error_type": "healthcheck"}, status_code=503)
        return Response(status_code=200)

    @app.get("/metrics", summary="Prometheus metrics (tgi_* names)")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- OpenAI routes ----

    @app.get("/v1/models", summary="The served model")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": state.model_id, "object": "model", "created": 0,
                                            "owned_by": state.model_id}]}

    def openai_params(max_tokens: int | None, temperature: float | None, top_p: float | None,
                      frequency_penalty: float | None, seed: int | None, stop: str | list[str] | None,
                      n: int | None, repetition_penalty: float | None = None) -> GenerateParameters:
        if n not in (None, 1):
            raise validation(f"`n` must be 1 (one choice per prompt). Given: {n}")
        greedy = temperature == 0
        return GenerateParameters(
            do_sample=not greedy, temperature=None if greedy else temperature,
            # temperature 0 is greedy whatever top_p says (OpenAI, vLLM); a kept top_p would make TGI's chooser sample
            top_p=None if greedy or (top_p is not None and top_p >= 1.0) else top_p,
            frequency_penalty=frequency_penalty,
            repetition_penalty=repetition_penalty, seed=seed, max_new_tokens=max_tokens,
            stop=[stop] if isinstance(stop, str) else stop, details=True)

    async def openai_run(request: Request, prompts: list[str], params: GenerateParameters, stream: bool,
                         include_usage: bool, make_chunk: Callable[[int, str, str | None], dict],
                         make_final: Callable[[list[Completion]], dict], route: str) -> Response:
        if not stream:
            with state.admit(route):
                pairs = [validate(p, params, stream=False) for p in prompts]
                done = await asyncio.gather(*(_complete(state, request, v, t) for v, t in pairs))
                for (v, t), c in zip(pairs, done, strict=True):
                    _record(state, route, v, c, t)
            return JSONResponse(make_final(list(done)))

        async def events() -> AsyncIterator[str]:
            try:
                with state.admit(route):
                    pairs = [validate(p, params, stream=True) for p in prompts]
                    merged: asyncio.Queue = asyncio.Queue()

                    async def pump(i: int, v: ValidRequest, t: RequestTimes) -> None:
                        try:
                            async for out in _events(state, v, t):
                                await merged.put((i, out))
                        except ServeError as e:
                            await merged.put((i, e))

                    tasks = [asyncio.ensure_future(pump(i, v, t)) for i, (v, t) in enumerate(pairs)]
                    try:
                        finished: dict[int, Completion] = {}
                        while len(finished) < len(pairs):
                            i, out = await merged.get()
                            if isinstance(out, ServeError):
                                raise out
                            reason = None
                            if out.completion is not None:
                                finished[i] = out.completion
                                reason = R.OPENAI_FINISH[str(out.completion.finish_reason)]
                                _record(state, route, pairs[i][0], out.completion, pairs[i][1])
                            yield R.sse_json(make_chunk(i, out.text, reason))
                    finally:
                        for task in tasks:
                            task.cancel()
                    if include_usage:
                        final = make_final([finished[i] for i in range(len(pairs))])
                        final["choices"] = []
                        yield R.sse_json(final)
                    yield R.SSE_DONE
            except ServeError as e:
                yield R.sse_json(e.body())
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={**STREAM_HEADERS, "x-compute-type": state.compute_type})

    @app.post("/v1/completions", dependencies=protected, responses=ERROR_RESPONSES, summary="OpenAI completions")
    async def completions(request: Request, body: CompletionRequest) -> Response:
        if body.suffix is not None:
            raise validation("Suffix is not supported and can be achieved by preprocessing the prompt.")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        check_prompt_count(prompts, state.max_client_batch_size)
        params = openai_params(body.max_tokens, body.temperature, body.top_p, body.frequency_penalty, body.seed,
                               body.stop, body.n, body.repetition_penalty)
        rid = f"cmpl-{uuid.uuid4().hex}"
        model = body.model or state.model_id

        def chunk(i: int, text: str, reason: str | None) -> dict:
            return {**R.openai_envelope("text_completion", model, rid),
                    "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}]}

        def final(done: list[Completion]) -> dict:
            return {**R.openai_envelope("text_completion", model, rid),
                    "choices": [{"index": i, "text": c.text, "logprobs": None,
                                 "finish_reason": R.OPENAI_FINISH[str(c.finish_reason)]}
                                for i, c in enumerate(done)],
                    "usage": R.usage(sum(len(c.prompt_token_ids) for c in done),
                                     sum(c.generated_tokens for c in done))}

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await openai_run(request, prompts, params, body.stream, include_usage, chunk, final, "completions")

    @app.post("/v1/chat/completions", dependencies=protected, responses=ERROR_RESPONSES,
              summary="OpenAI chat completions (the tokenizer's chat template, else DEFAULT_CHAT_TEMPLATE)")
    async def chat(request: Request, body: ChatRequest) -> Response:
        if not body.messages:
            raise validation("`messages` cannot be empty")
        messages = [{"role": m.role, "content": _content_text(m.content)} for m in body.messages]
        template = getattr(state.tokenizer, "chat_template", None) or DEFAULT_CHAT_TEMPLATE
        try:
            prompt = state.tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                         add_generation_prompt=True)
        except Exception as e:  # a template failure is the request's problem (TGI: template_error)
            raise ServeError("template_error", str(e)) from None
        params = openai_params(body.max_completion_tokens or body.max_tokens, body.temperature, body.top_p,
                               body.frequency_penalty, body.seed, body.stop, body.n)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        model = body.model or state.model_id
        first = {True}

        def chunk(i: int, text: str, reason: str | None) -> dict:
            delta: dict[str, Any] = {"content": text}
            if first:
                delta = {"role": "assistant", **delta}
                first.clear()
            return {**R.openai_envelope("chat.completion.chunk", model, rid),
                    "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": reason}]}

        def final(done: list[Completion]) -> dict:
            c = done[0]
            return {**R.openai_envelope("chat.completion", model, rid),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                                 "finish_reason": R.OPENAI_FINISH[str(c.finish_reason)]}],
                    "usage": R.usage(len(c.prompt_token_ids), c.generated_tokens)}

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await openai_run(request, [prompt], params, body.stream, include_usage, chunk, final, "chat")

    return app


class _Unauthorized(Exception):
    """Missing or wrong Bearer key: 401 with an empty body (TGI)."""


def _content_text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))

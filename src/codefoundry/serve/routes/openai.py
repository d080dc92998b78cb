"""OpenAI's routes: `POST /v1/completions`, `/v1/chat/completions` (API key), `GET /v1/models`.

Parameters map to `SamplingParams` through `SamplingParams.from_openai` (in
`Validator.validate_openai`), the mapping the eval harness uses too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from codefoundry.generate import Completion
from codefoundry.serve import inference
from codefoundry.serve import responses as R
from codefoundry.serve.errors import ServeError, validation
from codefoundry.serve.routes import ERROR_RESPONSES, EventStreamResponse
from codefoundry.serve.schemas import ChatRequest, CompletionRequest
from codefoundry.serve.state import ServerState, State, require_api_key
from codefoundry.serve.tracing import RequestTimes
from codefoundry.serve.validation import ValidRequest, check_prompt_count

router = APIRouter(tags=["OpenAI"])
protected = [Depends(require_api_key)]

def _check_n(n: int | None) -> None:
    if n not in (None, 1):
        raise validation(f"`n` must be 1 (one choice per prompt). Given: {n}")


def _validate(state: ServerState, prompts: list[str], body: CompletionRequest | ChatRequest,
              max_tokens: int | None) -> list[tuple[ValidRequest, RequestTimes]]:
    openai = {"temperature": body.temperature, "top_p": body.top_p, "frequency_penalty": body.frequency_penalty,
              "presence_penalty": body.presence_penalty, "seed": body.seed, "stop": body.stop,
              "repetition_penalty": getattr(body, "repetition_penalty", None), "model": body.model,
              "response_format": body.response_format, "speculate": body.speculate}
    return [inference.validated(state, p, lambda p=p: state.validator.validate_openai(p, max_tokens=max_tokens,
                                                                                      **openai))
            for p in prompts]


async def _run(state: ServerState, request: Request, prompts: list[str], body: CompletionRequest | ChatRequest,
               max_tokens: int | None, make_chunk: Callable[[int, str, str | None], dict],
               make_final: Callable[[list[Completion]], dict], route: str) -> Response:
    if not body.stream:
        with state.admit():
            pairs = _validate(state, prompts, body, max_tokens)
            done = await asyncio.gather(*(inference.complete(state, request, v, t) for v, t in pairs))
            for (v, t), c in zip(pairs, done, strict=True):
                inference.record(state, route, v, c, t)
        return JSONResponse(make_final(list(done)))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def events() -> AsyncIterator[str]:
        try:
            with state.admit():
                pairs = _validate(state, prompts, body, max_tokens)
                merged: asyncio.Queue = asyncio.Queue()

                async def pump(i: int, v: ValidRequest, t: RequestTimes) -> None:
                    try:
                        async for out in inference.events(state, v, t):
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
                            inference.record(state, route, pairs[i][0], out.completion, pairs[i][1])
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
    return EventStreamResponse(events(), headers=inference.stream_headers(state))


@router.get("/v1/models", summary="The served model and its LoRA adapters (each a `model` to ask for)")
async def models(state: State) -> dict[str, Any]:
    base = {"id": state.model_id, "object": "model", "created": 0, "owned_by": state.model_id}
    return {"object": "list", "data": [base, *({**base, "id": name, "parent": state.model_id}
                                               for name in sorted(state.validator.adapters))]}


@router.post("/v1/completions", dependencies=protected, responses=ERROR_RESPONSES, summary="OpenAI completions")
async def completions(state: State, request: Request, body: CompletionRequest) -> Response:
    if body.suffix is not None:
        raise validation("Suffix is not supported and can be achieved by preprocessing the prompt.")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    check_prompt_count(prompts, state.config.max_client_batch_size)
    _check_n(body.n)
    state.validator.adapter(body.model, openai=True)      # an unknown model is a 404 before any stream starts
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

    return await _run(state, request, prompts, body, body.max_tokens, chunk, final, "completions")


@router.post("/v1/chat/completions", dependencies=protected, responses=ERROR_RESPONSES,
             summary="OpenAI chat completions (the model's own chat template; 422 for a model without one)")
async def chat(state: State, request: Request, body: ChatRequest) -> Response:
    if not body.messages:
        raise validation("`messages` cannot be empty")
    _check_n(body.n)
    state.validator.adapter(body.model, openai=True)      # an unknown model is a 404 before any stream starts
    messages = [{"role": m.role, "content": _content_text(m.content)} for m in body.messages]
    prompt = chat_prompt(state.tokenizer, messages)
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

    max_tokens = body.max_completion_tokens or body.max_tokens
    return await _run(state, request, [prompt], body, max_tokens, chunk, final, "chat")


def chat_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The model's own chat template applied to `messages`, ending with the assistant's turn opened.

    A model without a template cannot chat: guessing a format would make it answer in one it never saw.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ServeError("template_error", "this model has no chat template, so it cannot chat: use "
                                           "/v1/completions or /generate with a plain prompt")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # a template's own failure ("roles must alternate") is the request's problem
        raise ServeError("template_error", str(e)) from None


def _content_text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))

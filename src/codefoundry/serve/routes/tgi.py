"""TGI's generation routes: `POST /`, `/generate`, `/generate_stream` (SSE), `/tokenize`; all need the API key."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from codefoundry.serve import inference
from codefoundry.serve import responses as R
from codefoundry.serve.errors import ServeError, validation
from codefoundry.serve.routes import ERROR_RESPONSES, EventStreamResponse
from codefoundry.serve.schemas import (
    CompatGenerateRequest,
    GenerateRequest,
    GenerateResponse,
    SimpleToken,
    StreamResponse,
)
from codefoundry.serve.state import ServerState, State, require_api_key
from codefoundry.serve.validation import check_unicode

router = APIRouter(tags=["Text Generation Inference"], dependencies=[Depends(require_api_key)])
STREAM_DOC = {200: {"model": StreamResponse, "description": "Generated tokens as server-sent events (`data:` + "
                    "StreamResponse); the last carries generated_text, and an error ends the stream as "
                    "a final `{\"error\", \"error_type\"}` event"}}


async def _generate_json(state: ServerState, request: Request, body: GenerateRequest,
                         route: str) -> tuple[dict, dict]:
    with state.admit():
        valid, t = inference.validated(
            state, body.inputs, lambda: state.validator.validate(body.inputs, body.parameters, stream=False))
        valids, times = inference.fan_out(valid, valid.best_of), inference.group_times(t, valid.best_of)
        done = await inference.complete_group(state, request, valids, times)
        for v, c, ti in zip(valids, done, times, strict=True):
            inference.record(state, route, v, c, ti)
    best = max(range(len(done)), key=lambda i: inference.mean_logprob(done[i]))   # first of equals, as TGI
    c = dataclasses.replace(done[best], prefill_logprobs=done[0].prefill_logprobs)   # copy 0 computed the prompt's
    others = [o for i, o in enumerate(done) if i != best] if valid.best_of > 1 else None
    payload = R.tgi_generate(valid, c, state.tokenizer, state.engine_loop.special_ids, others)
    return payload, inference.timing_headers(state, valid, c, t)


def _stream(state: ServerState, body: GenerateRequest, route: str) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        try:
            with state.admit():
                valid, t = inference.validated(
                    state, body.inputs, lambda: state.validator.validate(body.inputs, body.parameters, stream=True))
                special = state.engine_loop.special_ids
                index = 0
                async for out in inference.events(state, valid, t):
                    index += 1
                    yield R.tgi_stream_event(index, valid, out, state.tokenizer, special)
                    if out.completion is not None:
                        inference.record(state, route, valid, out.completion, t)
        except ServeError as e:
            yield e.sse()
    return EventStreamResponse(events(), headers=inference.stream_headers(state))


@router.post("/", response_model=list[GenerateResponse], responses=ERROR_RESPONSES,
             summary="Generate (TGI compat): a list, or SSE when stream is true")
async def compat_generate(state: State, request: Request, body: CompatGenerateRequest) -> Response:
    if body.stream:
        return _stream(state, body, "generate_stream")
    payload, headers = await _generate_json(state, request, body, "generate")
    return JSONResponse([payload], headers=headers)


@router.post("/generate", response_model=GenerateResponse, responses=ERROR_RESPONSES, summary="Generate tokens")
async def generate(state: State, request: Request, body: GenerateRequest) -> Response:
    payload, headers = await _generate_json(state, request, body, "generate")
    return JSONResponse(payload, headers=headers)


@router.post("/generate_stream", response_class=EventStreamResponse, responses={**ERROR_RESPONSES, **STREAM_DOC},
             summary="Generate a stream of tokens (SSE; errors arrive as a final error event)")
async def generate_stream(state: State, body: GenerateRequest) -> StreamingResponse:
    return _stream(state, body, "generate_stream")


@router.post("/tokenize", response_model=list[SimpleToken], responses=ERROR_RESPONSES,
             summary="Tokenize inputs (byte offsets)")
async def tokenize(state: State, body: GenerateRequest) -> list[dict[str, Any]]:
    if not body.inputs:
        raise validation("`inputs` cannot be empty")
    check_unicode(body.inputs)
    enc = state.tokenizer(body.inputs, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        start = len(body.inputs[:a].encode())
        out.append({"id": tid, "text": body.inputs[a:b], "start": start,
                    "stop": start + len(body.inputs[a:b].encode())})
    return out

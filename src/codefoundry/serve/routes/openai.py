"""OpenAI's routes: `POST /v1/completions`, `/v1/chat/completions` (API key), `GET /v1/models`.

Parameters map to `SamplingParams` through `SamplingParams.from_openai` (in
`Validator.validate_openai`), the mapping the eval harness uses too. `n` and `best_of` run
several sequences per prompt that share its KV blocks (`inference.fan_out`); `logprobs`
report the values TGI's `details` do (the distribution each token was drawn from), and `echo`
with `logprobs` the prompt's own (from prefill, as lm-eval's loglikelihood needs); `suffix`
becomes the model's fill-in-the-middle prompt; chat `tools` go to the model's chat template.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from codefoundry.generate import Completion, StepOutput
from codefoundry.serve import inference
from codefoundry.serve import responses as R
from codefoundry.serve.errors import ServeError, validation
from codefoundry.serve.routes import ERROR_RESPONSES, EventStreamResponse
from codefoundry.serve.routes.playground import fim_tokens
from codefoundry.serve.schemas import ChatMessage, ChatRequest, CompletionRequest
from codefoundry.serve.state import ServerState, State, require_api_key
from codefoundry.serve.tracing import RequestTimes
from codefoundry.serve.validation import (
    OPENAI_MAX_LOGPROBS,
    OPENAI_MAX_TOP_LOGPROBS,
    ValidRequest,
    check_choices,
    check_prompt_count,
    check_text_content,
    check_unsupported,
)

router = APIRouter(tags=["OpenAI"])
protected = [Depends(require_api_key)]

Prompt = str | list[int]


@dataclass
class _Choices:
    """How many sequences each prompt gets, and which of them the reply shows."""

    n: int                      # choices returned per prompt
    best_of: int                # sequences generated per prompt (the n best are returned)


@dataclass
class _Group:
    """One prompt's sequences once done: the returned choices (best first when best_of > n) and all of them."""

    valid: ValidRequest
    chosen: list[Completion]
    every: list[Completion]


def _validate(state: ServerState, prompts: list[Prompt], body: CompletionRequest | ChatRequest,
              max_tokens: int | None, logprobs: int | None, echo: bool,
              max_logprobs: int) -> list[tuple[ValidRequest, RequestTimes]]:
    openai = {"temperature": body.temperature, "top_p": body.top_p, "frequency_penalty": body.frequency_penalty,
              "presence_penalty": body.presence_penalty, "seed": body.seed, "stop": body.stop,
              "repetition_penalty": body.repetition_penalty, "logit_bias": body.logit_bias, "model": body.model,
              "logprobs": logprobs, "echo": echo, "max_logprobs": max_logprobs,
              "response_format": body.response_format, "speculate": body.speculate}
    return [inference.validated(state, str(p), lambda p=p: state.validator.validate_openai(
                p, max_tokens=max_tokens, **openai)) for p in prompts]


def _choose(valid: ValidRequest, done: list[Completion], n: int) -> _Group:
    """The n choices of one prompt: all of them, or the n with the highest mean token logprob (best_of > n)."""
    ranked = sorted(range(len(done)), key=lambda i: -inference.mean_logprob(done[i]))   # stable: ties keep order
    chosen = done if len(done) == n else [done[i] for i in ranked[:n]]
    # copy 0 alone computed the prompt's logprobs (echo): every choice shows them
    chosen = [dataclasses.replace(c, prefill_logprobs=done[0].prefill_logprobs,
                                  prefill_top_tokens=done[0].prefill_top_tokens) for c in chosen]
    return _Group(valid, chosen, done)


async def _run(state: ServerState, request: Request, prompts: list[Prompt], body: CompletionRequest | ChatRequest,
               max_tokens: int | None, choices: _Choices, make_chunk: Callable[[int, int, StepOutput, str | None],
                                                                                 dict],
               make_final: Callable[[list[_Group]], dict], route: str, *, logprobs: int | None = None,
               echo: bool = False, max_logprobs: int = OPENAI_MAX_LOGPROBS) -> Response:
    n, count = choices.n, choices.best_of
    if not body.stream:
        with state.admit():
            pairs = _validate(state, prompts, body, max_tokens, logprobs, echo, max_logprobs)
            groups = [(inference.fan_out(v, count), inference.group_times(t, count)) for v, t in pairs]
            done = await asyncio.gather(*(inference.complete_group(state, request, vs, ts) for vs, ts in groups))
            for (vs, ts), cs in zip(groups, done, strict=True):
                for v, t, c in zip(vs, ts, cs, strict=True):
                    inference.record(state, route, v, c, t)
        return JSONResponse(make_final([_choose(v, cs, n) for (v, _), cs in zip(pairs, done, strict=True)]))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def events() -> AsyncIterator[str]:
        try:
            with state.admit():
                pairs = _validate(state, prompts, body, max_tokens, logprobs, echo, max_logprobs)
                groups = [(inference.fan_out(v, count), inference.group_times(t, count)) for v, t in pairs]
                merged: asyncio.Queue = asyncio.Queue()

                async def pump(g: int) -> None:
                    valids, times = groups[g]
                    try:
                        async for j, out in inference.group_events(state, valids, times):
                            await merged.put((g, j, out))
                    except ServeError as e:
                        await merged.put((g, 0, e))

                tasks = [asyncio.ensure_future(pump(g)) for g in range(len(groups))]
                try:
                    finished: dict[tuple[int, int], Completion] = {}
                    while len(finished) < len(groups) * count:
                        g, j, out = await merged.get()
                        if isinstance(out, ServeError):
                            raise out
                        reason = None
                        if out.completion is not None:
                            finished[g, j] = out.completion
                            reason = R.OPENAI_FINISH[str(out.completion.finish_reason)]
                            inference.record(state, route, groups[g][0][j], out.completion, groups[g][1][j])
                        yield R.sse_json(make_chunk(g, j, out, reason))
                finally:
                    for task in tasks:
                        task.cancel()
                if include_usage:
                    final = make_final([_Group(v, [finished[g, j] for j in range(count)],
                                               [finished[g, j] for j in range(count)])
                                        for g, (v, _) in enumerate(pairs)])
                    final["choices"] = []
                    yield R.sse_json(final)
                yield R.SSE_DONE
        except ServeError as e:
            yield R.sse_json(e.body())
    return EventStreamResponse(events(), headers=inference.stream_headers(state))


def _usage(groups: list[_Group]) -> dict[str, int]:
    """The prompt once per prompt; every generated sequence (best_of's discarded ones too: they were computed)."""
    return R.usage(sum(len(g.every[0].prompt_token_ids) for g in groups),
                   sum(c.generated_tokens for g in groups for c in g.every))


@router.get("/v1/models", summary="The served model and its LoRA adapters (each a `model` to ask for)")
async def models(state: State) -> dict[str, Any]:
    base = {"id": state.model_id, "object": "model", "created": 0, "owned_by": state.model_id}
    return {"object": "list", "data": [base, *({**base, "id": name, "parent": state.model_id}
                                               for name in sorted(state.validator.adapters))]}


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[Prompt]:
    """OpenAI's four prompt forms as a list of prompts: text, texts, token ids, lists of token ids."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(p, int) for p in prompt):
        return [list(prompt)]                                   # type: ignore[arg-type]
    return list(prompt)                                         # type: ignore[arg-type]


@router.post("/v1/completions", dependencies=protected, responses=ERROR_RESPONSES, summary="OpenAI completions")
async def completions(state: State, request: Request, body: CompletionRequest) -> Response:
    check_unsupported(body.model_extra)
    prompts = _prompts(body.prompt)
    check_prompt_count(prompts, state.config.max_client_batch_size)
    n, best_of = check_choices(body.n, body.best_of, stream=body.stream, limit=state.limits.max_choices)
    echo = bool(body.echo)
    if body.suffix is not None:
        if echo:
            raise validation("`echo` cannot be used with `suffix`")
        if any(not isinstance(p, str) for p in prompts):
            raise validation("`suffix` needs a text prompt, not token ids")
        prompts = [fim_prompt(state.tokenizer, p, body.suffix) for p in prompts]   # type: ignore[arg-type]
    if echo and body.logprobs is not None and body.stream:
        raise validation("`echo` with `logprobs` is not supported when streaming (the prompt's logprobs come "
                         "with the whole reply)")
    state.validator.adapter(body.model, openai=True)      # an unknown model is a 404 before any stream starts
    rid = f"cmpl-{uuid.uuid4().hex}"
    model = body.model or state.model_id
    tokenizer = state.tokenizer
    offsets: dict[tuple[int, int], int] = {}             # per streamed choice: where its next token's text starts

    def prompt_text(v: ValidRequest) -> str:
        return v.inputs

    def chunk(g: int, j: int, out: StepOutput, reason: str | None) -> dict:
        text = out.text
        first = (g, j) not in offsets
        valid_text = prompts[g] if isinstance(prompts[g], str) else tokenizer.decode(prompts[g])
        if first:
            offsets[g, j] = len(valid_text)
            if echo:
                text = valid_text + text
        lp = None
        if body.logprobs is not None:
            lp = R.completion_logprobs(None, tokenizer, echo=False, prompt_text=valid_text, tokens=[out.token],
                                       offset=offsets[g, j])
        offsets[g, j] += len(out.token.text)
        return {**R.openai_envelope("text_completion", model, rid),
                "choices": [{"index": g * n + j, "text": text, "logprobs": lp, "finish_reason": reason}]}

    def final(groups: list[_Group]) -> dict:
        choices = []
        for g, group in enumerate(groups):
            for j, c in enumerate(group.chosen):
                text = prompt_text(group.valid) + c.text if echo else c.text
                lp = None
                if body.logprobs is not None:
                    lp = R.completion_logprobs(c, tokenizer, echo=echo, prompt_text=prompt_text(group.valid))
                choices.append({"index": g * n + j, "text": text, "logprobs": lp,
                                "finish_reason": R.OPENAI_FINISH[str(c.finish_reason)]})
        return {**R.openai_envelope("text_completion", model, rid), "choices": choices, "usage": _usage(groups)}

    return await _run(state, request, prompts, body, body.max_tokens, _Choices(n, best_of), chunk, final,
                      "completions", logprobs=body.logprobs, echo=echo)


@router.post("/v1/chat/completions", dependencies=protected, responses=ERROR_RESPONSES,
             summary="OpenAI chat completions (the model's own chat template; 422 for a model without one)")
async def chat(state: State, request: Request, body: ChatRequest) -> Response:
    check_unsupported(body.model_extra)
    if not body.messages:
        raise validation("`messages` cannot be empty")
    for m in body.messages:
        check_text_content(m.content)
    n, _ = check_choices(body.n, None, stream=body.stream, limit=state.limits.max_choices)
    if body.top_logprobs is not None and not body.logprobs:
        raise validation("`top_logprobs` needs `logprobs` set to true")
    state.validator.adapter(body.model, openai=True)      # an unknown model is a 404 before any stream starts
    messages = [_message(m) for m in body.messages]
    prompt = chat_prompt(state.tokenizer, messages, _tools(state.tokenizer, body.tools, body.tool_choice))
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    model = body.model or state.model_id
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    started: set[int] = set()

    def chunk(g: int, j: int, out: StepOutput, reason: str | None) -> dict:
        delta: dict[str, Any] = {"content": out.text}
        if j not in started:
            delta = {"role": "assistant", **delta}
            started.add(j)
        lp = R.chat_logprobs([out.token], state.tokenizer, logprobs) if logprobs is not None else None
        return {**R.openai_envelope("chat.completion.chunk", model, rid),
                "choices": [{"index": j, "delta": delta, "logprobs": lp, "finish_reason": reason}]}

    def final(groups: list[_Group]) -> dict:
        choices = [{"index": j, "message": {"role": "assistant", "content": c.text},
                    "logprobs": R.chat_logprobs(c.tokens, state.tokenizer, logprobs) if logprobs is not None else None,
                    "finish_reason": R.OPENAI_FINISH[str(c.finish_reason)]}
                   for j, c in enumerate(groups[0].chosen)]
        return {**R.openai_envelope("chat.completion", model, rid), "choices": choices, "usage": _usage(groups)}

    max_tokens = body.max_completion_tokens or body.max_tokens
    return await _run(state, request, [prompt], body, max_tokens, _Choices(n, n), chunk, final, "chat",
                      logprobs=logprobs, max_logprobs=OPENAI_MAX_TOP_LOGPROBS)


def fim_prompt(tokenizer: Any, prefix: str, suffix: str) -> str:
    """OpenAI's `suffix` as the model's fill-in-the-middle prompt (prefix-suffix-middle, the order StarCoder was
    trained in), with the model's own FIM tokens; 422 for a model whose tokenizer has none."""
    fim = fim_tokens(tokenizer)
    if fim is None:
        raise validation("`suffix` needs a fill-in-the-middle model, and this model's tokenizer has no FIM tokens "
                         "(<fim_prefix>, <fim_suffix>, <fim_middle> or another known set): send the prompt alone")
    return f"{fim['prefix']}{prefix}{fim['suffix']}{suffix}{fim['middle']}"


def _message(m: ChatMessage) -> dict[str, Any]:
    """A message as chat templates read it (tool calls and tool results keep their fields)."""
    out: dict[str, Any] = {"role": m.role, "content": _content_text(m.content)}
    for key in ("name", "tool_calls", "tool_call_id"):
        if getattr(m, key) is not None:
            out[key] = getattr(m, key)
    return out


def _tools(tokenizer: Any, tools: list[dict[str, Any]] | None, tool_choice: str | dict | None) -> list | None:
    """The tools to render, or None; 422 when the template cannot show them or `tool_choice` would need
    constrained decoding (forcing a call)."""
    if not tools:
        return None
    if tool_choice not in (None, "auto", "none"):
        raise validation(f"`tool_choice` {tool_choice!r} is not supported: only \"auto\" and \"none\" (forcing "
                         f"a tool call needs constrained decoding)")
    template = getattr(tokenizer, "chat_template", None) or ""
    sources = template.values() if isinstance(template, dict) else [template]
    if not any("tools" in t for t in sources):
        raise validation("this model's chat template does not render tools, so `tools` cannot be given to it: "
                         "describe them in a message instead")
    return None if tool_choice == "none" else tools


def chat_prompt(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
    """The model's own chat template applied to `messages`, ending with the assistant's turn opened.

    A model without a template cannot chat: guessing a format would make it answer in one it never saw.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ServeError("template_error", "this model has no chat template, so it cannot chat: use "
                                           "/v1/completions or /generate with a plain prompt")
    try:
        extra = {} if tools is None else {"tools": tools}
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)
    except Exception as e:  # a template's own failure ("roles must alternate") is the request's problem
        raise ServeError("template_error", str(e)) from None


def _content_text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))

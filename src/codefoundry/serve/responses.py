"""Completions → TGI and OpenAI response bodies (plain dicts; non-finite logprobs become null)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from codefoundry import __version__
from codefoundry.generate import Completion, GeneratedToken, StepOutput
from codefoundry.generate.detokenizer import IncrementalDetokenizer
from codefoundry.serve.validation import ValidRequest

SYSTEM_FINGERPRINT = f"{__version__}-native"
OPENAI_FINISH = {"length": "length", "eos_token": "stop", "stop_sequence": "stop"}


def _lp(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def token_json(t: GeneratedToken) -> dict[str, Any]:
    return {"id": t.id, "text": t.text, "logprob": _lp(t.logprob), "special": t.special}


def top_tokens_json(t: GeneratedToken, tokenizer: Any, special_ids: set[int]) -> list[dict[str, Any]]:
    return [{"id": i, "text": tokenizer.decode([i]), "logprob": _lp(lp), "special": i in special_ids}
            for i, lp in t.top_tokens]


def generated_text(valid: ValidRequest, c: Completion) -> str:
    return valid.inputs + c.text if valid.return_full_text else c.text


def _prefill_json(valid: ValidRequest, c: Completion, tokenizer: Any) -> list[dict[str, Any]]:
    if not valid.decoder_input_details or c.prefill_logprobs is None:
        return []
    return [{"id": i, "text": tokenizer.decode([i]), "logprob": _lp(lp)}
            for i, lp in zip(c.prompt_token_ids, c.prefill_logprobs, strict=False)]


def _details_json(valid: ValidRequest, c: Completion, tokenizer: Any, special_ids: set[int],
                  prefill: list[dict[str, Any]]) -> dict[str, Any]:
    details: dict[str, Any] = {"finish_reason": str(c.finish_reason), "generated_tokens": c.generated_tokens,
                               "seed": c.seed, "prefill": prefill, "tokens": [token_json(t) for t in c.tokens]}
    if valid.params.top_n_tokens:
        details["top_tokens"] = [top_tokens_json(t, tokenizer, special_ids) for t in c.tokens]
    return details


def tgi_generate(valid: ValidRequest, c: Completion, tokenizer: Any, special_ids: set[int],
                 others: list[Completion] | None = None) -> dict[str, Any]:
    """TGI's `GenerateResponse` (details only when asked); `others`: best_of's other sequences, for
    `details.best_of_sequences` (they share the prompt, so they show its prefill too)."""
    body: dict[str, Any] = {"generated_text": generated_text(valid, c)}
    if valid.details or valid.decoder_input_details:
        prefill = _prefill_json(valid, c, tokenizer)
        details = _details_json(valid, c, tokenizer, special_ids, prefill)
        if others is not None:
            details["best_of_sequences"] = [
                {"generated_text": generated_text(valid, o), **_details_json(valid, o, tokenizer, special_ids, prefill)}
                for o in others]
        body["details"] = details
    return body


def tgi_stream_event(index: int, valid: ValidRequest, out: StepOutput, tokenizer: Any,
                     special_ids: set[int]) -> str:
    """One `data:{…}` SSE event; the last one carries generated_text (and details when asked)."""
    ev: dict[str, Any] = {"index": index, "token": token_json(out.token)}
    if valid.params.top_n_tokens:
        ev["top_tokens"] = top_tokens_json(out.token, tokenizer, special_ids)
    ev["generated_text"] = None
    ev["details"] = None
    c = out.completion
    if c is not None:
        ev["generated_text"] = generated_text(valid, c)
        if valid.details:
            ev["details"] = {"finish_reason": str(c.finish_reason), "generated_tokens": c.generated_tokens,
                             "seed": c.seed, "input_length": len(c.prompt_token_ids)}
    return f"data:{json.dumps(ev)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def openai_envelope(obj: str, model: str, request_id: str) -> dict[str, Any]:
    return {"id": request_id, "object": obj, "created": int(time.time()), "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT}


def sse_json(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


# ---- OpenAI logprobs ----

OPENAI_MASKED_LOGPROB = -9999.0        # what OpenAI reports for a token the warpers ruled out (JSON has no -inf)


def _olp(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) else OPENAI_MASKED_LOGPROB


def prompt_pieces(tokenizer: Any, prompt_ids: list[int]) -> list[str]:
    """Each prompt token's text, incrementally decoded (a character split across tokens shows on its last one)."""
    detok = IncrementalDetokenizer(tokenizer, [], skip_special_tokens=False)
    pieces = [detok.add(i) for i in prompt_ids]
    if pieces:
        pieces[-1] += detok.flush()
    return pieces


def completion_logprobs(c: Completion | None, tokenizer: Any, *, echo: bool, prompt_text: str,
                        tokens: list[GeneratedToken] | None = None, offset: int | None = None) -> dict[str, Any]:
    """OpenAI's legacy completions `logprobs`: tokens, token_logprobs, top_logprobs (the asked alternatives plus
    the chosen token) and text_offset (into prompt + completion). With `echo`, the prompt's tokens come first
    (the first with a null logprob). `tokens`/`offset`: a stream chunk's tokens and where they start."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    at = len(prompt_text) if offset is None else offset
    if tokens is None:
        assert c is not None
        tokens = c.tokens
    if echo and c is not None:
        at = 0
        prefill = c.prefill_logprobs or []
        tops = c.prefill_top_tokens or []
        for k, piece in enumerate(prompt_pieces(tokenizer, c.prompt_token_ids)):
            lp = prefill[k] if k < len(prefill) else None
            top = tops[k] if k < len(tops) else []
            out["tokens"].append(piece)
            out["token_logprobs"].append(None if lp is None else _olp(lp))
            out["top_logprobs"].append(None if k == 0 else _top_dict(tokenizer, top, piece, lp))
            out["text_offset"].append(at)
            at += len(piece)
    for t in tokens:
        out["tokens"].append(t.text)
        out["token_logprobs"].append(_olp(t.logprob))
        out["top_logprobs"].append(_top_dict(tokenizer, t.top_tokens, t.text, t.logprob))
        out["text_offset"].append(at)
        at += len(t.text)
    return out


def _top_dict(tokenizer: Any, top: list[tuple[int, float]], chosen: str, chosen_lp: float | None) -> dict[str, float]:
    d = {tokenizer.decode([i]): _olp(lp) for i, lp in top}
    if chosen_lp is not None:
        d.setdefault(chosen, _olp(chosen_lp))
    return d


def chat_logprobs(tokens: list[GeneratedToken], tokenizer: Any, top_logprobs: int) -> dict[str, Any]:
    """OpenAI chat's `logprobs`: `{"content": [{token, logprob, bytes, top_logprobs: [...]}]}`."""
    def entry(text: str, lp: float) -> dict[str, Any]:
        return {"token": text, "logprob": _olp(lp), "bytes": list(text.encode())}

    return {"content": [{**entry(t.text, t.logprob),
                         "top_logprobs": [entry(tokenizer.decode([i]), lp) for i, lp in t.top_tokens[:top_logprobs]]}
                        for t in tokens]}

"""Completions → TGI and OpenAI response bodies (plain dicts; non-finite logprobs become null)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from codefoundry import __version__
from codefoundry.generate import Completion, GeneratedToken, StepOutput
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


def tgi_generate(valid: ValidRequest, c: Completion, tokenizer: Any, special_ids: set[int]) -> dict[str, Any]:
    """TGI's `GenerateResponse` (details only when asked)."""
    body: dict[str, Any] = {"generated_text": generated_text(valid, c)}
    if valid.details or valid.decoder_input_details:
        prefill = []
        if valid.decoder_input_details and c.prefill_logprobs is not None:
            prefill = [{"id": i, "text": tokenizer.decode([i]), "logprob": _lp(lp)}
                       for i, lp in zip(c.prompt_token_ids, c.prefill_logprobs, strict=False)]
        details: dict[str, Any] = {"finish_reason": str(c.finish_reason), "generated_tokens": c.generated_tokens,
                                   "seed": c.seed, "prefill": prefill, "tokens": [token_json(t) for t in c.tokens]}
        if valid.params.top_n_tokens:
            details["top_tokens"] = [top_tokens_json(t, tokenizer, special_ids) for t in c.tokens]
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

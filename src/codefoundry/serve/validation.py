"""Request validation, TGI's `Validation` component: a body in, a `ValidRequest` (every default resolved) out.

The range rules of the sampling parameters are the generation core's (`SamplingParams.validate`,
TGI's messages); this module adds the server's limits: empty inputs, stop-sequence count,
truncation, input and total token budgets, top_n_tokens, best_of, unsupported features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from codefoundry.generate import SamplingParams, ValidationError
from codefoundry.serve.errors import ServeError, validation
from codefoundry.serve.schemas import GenerateParameters

MAX_BEST_OF = 1                       # one sequence per request (best_of > 1 is refused with 422)


@dataclass(frozen=True)
class Limits:
    max_input_tokens: int
    max_total_tokens: int
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5


@dataclass(frozen=True)
class ValidRequest:
    """What the engine accepts: token ids and concrete sampling parameters."""

    input_ids: list[int]
    params: SamplingParams
    return_full_text: bool
    details: bool
    decoder_input_details: bool
    inputs: str                       # the text of `input_ids` (after truncation), for return_full_text


class Validator:
    """Tokenizes and checks requests against the server's limits."""

    def __init__(self, tokenizer: Any, limits: Limits) -> None:
        self.tokenizer, self.limits = tokenizer, limits

    def tokenize(self, text: str) -> list[int]:
        """Special tokens in the text (`<fim_prefix>`, …) are recognised as such, as llm-ls expects."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def validate(self, inputs: str, parameters: GenerateParameters | None, *, stream: bool,
                 default_return_full_text: bool = False) -> ValidRequest:
        if parameters is None:           # TGI's default_parameters(): sampling when no parameters at all
            parameters = GenerateParameters(do_sample=True)
        p = parameters
        lim = self.limits
        if not inputs:
            raise validation("`inputs` cannot be empty")
        if p.grammar is not None:
            raise validation("grammar is not supported")
        if p.adapter_id is not None:
            raise validation("adapters are not supported (this server loads no LoRA adapters)")
        if p.watermark:
            raise validation("watermark is not supported")
        if p.best_of is not None:
            if stream and p.best_of != 1:
                raise validation("`best_of` != 1 is not allowed for this endpoint")
            if not 0 < p.best_of <= MAX_BEST_OF:
                raise validation(f"`best_of` must be > 0 and <= {MAX_BEST_OF}. Given: {p.best_of}")
        if stream and p.decoder_input_details:
            raise validation("`decoder_input_details` == true is not supported when streaming tokens")
        for name in ("temperature", "repetition_penalty", "frequency_penalty", "top_p", "typical_p"):
            value = getattr(p, name)
            if value is not None and not math.isfinite(value):
                raise validation(f"`{name}` must be a finite number. Given: {value}")
        stop = p.stop or []
        if len(stop) > lim.max_stop_sequences:
            raise validation(f"`stop` supports up to {lim.max_stop_sequences} stop sequences. Given: {len(stop)}")
        top_n = p.top_n_tokens or 0
        if not 0 <= top_n <= lim.max_top_n_tokens:
            raise validation(f"`top_n_tokens` must be >= 0 and <= {lim.max_top_n_tokens}. Given: {top_n}")
        if p.truncate is not None and not 0 < p.truncate <= lim.max_input_tokens:
            raise validation(f"`truncate` must be strictly positive and less than {lim.max_input_tokens}. "
                             f"Given: {p.truncate}")
        if p.max_new_tokens is not None and p.max_new_tokens <= 0:
            raise validation(f"`max_new_tokens` must be strictly positive. Given: {p.max_new_tokens}")
        ids = self.tokenize(inputs)
        if not ids:
            raise validation("`inputs` cannot be empty")
        if p.truncate is not None and len(ids) > p.truncate:
            ids = ids[-p.truncate:]
            inputs = self.tokenizer.decode(ids)
        if len(ids) > lim.max_input_tokens:
            raise validation(f"`inputs` tokens must be <= {lim.max_input_tokens}. Given: {len(ids)}")
        max_new = p.max_new_tokens if p.max_new_tokens is not None else lim.max_total_tokens - len(ids)
        if len(ids) + max_new > lim.max_total_tokens:
            raise validation(f"`inputs` tokens + `max_new_tokens` must be <= {lim.max_total_tokens}. "
                             f"Given: {len(ids)} `inputs` tokens and {max_new} `max_new_tokens`")
        try:
            params = SamplingParams(
                do_sample=bool(p.do_sample), temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
                typical_p=p.typical_p, repetition_penalty=p.repetition_penalty,
                frequency_penalty=p.frequency_penalty, seed=p.seed, max_new_tokens=max_new,
                stop=tuple(stop), top_n_tokens=top_n, details=bool(p.details),
                decoder_input_details=bool(p.decoder_input_details))
        except ValidationError as e:
            raise validation(str(e)) from None
        full = p.return_full_text if p.return_full_text is not None else default_return_full_text
        return ValidRequest(ids, params, bool(full), bool(p.details), bool(p.decoder_input_details), inputs)


def check_prompt_count(prompts: list[str], max_client_batch_size: int) -> None:
    if not prompts:
        raise validation("`prompt` cannot be empty")
    if len(prompts) > max_client_batch_size:
        raise ServeError("validation", f"Number of prompts exceeds the maximum allowed batch size of "
                                       f"{max_client_batch_size}. Given: {len(prompts)}")

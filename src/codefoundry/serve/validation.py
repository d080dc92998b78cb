"""Request validation, TGI's `Validation` component: a body in, a `ValidRequest` (every default resolved) out.

Each rule is checked in one place. The ranges of the sampling parameters are `SamplingParams`'
(TGI's messages); a TGI body maps onto it in `Validator.validate`, an OpenAI body through
`SamplingParams.from_openai` in `Validator.validate_openai`. `Validator.check` then applies the
server's limits once: stop-sequence count, top_n_tokens, truncation, and the input and total
token budgets (derived from the model's positions and the KV pool at warmup); it resolves a
missing `max_new_tokens` and draws the seed, so a reply can always report the seed it used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from codefoundry.generate import SamplingParams, ValidationError
from codefoundry.generate.grammar import from_response_format, from_tgi
from codefoundry.serve.errors import ServeError, validation
from codefoundry.serve.schemas import MAX_BEST_OF, MAX_CHOICES, GenerateParameters

OPENAI_MAX_LOGPROBS = 5              # OpenAI's limit on completions' `logprobs`
OPENAI_MAX_TOP_LOGPROBS = 20         # and on chat's `top_logprobs`


@dataclass(frozen=True)
class Limits:
    max_input_tokens: int
    max_total_tokens: int
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_best_of: int = MAX_BEST_OF    # TGI's best_of
    max_choices: int = MAX_CHOICES    # OpenAI's n and best_of


@dataclass(frozen=True)
class ValidRequest:
    """What the engine accepts: token ids and concrete sampling parameters (max_new_tokens and seed resolved)."""

    input_ids: list[int]
    params: SamplingParams
    inputs: str                       # the text of `input_ids` (after truncation), for return_full_text
    return_full_text: bool = False
    best_of: int = 1                  # TGI: sequences to generate, the best returned (the others in details)

    @property
    def details(self) -> bool:
        return self.params.details

    @property
    def decoder_input_details(self) -> bool:
        return self.params.decoder_input_details


def sampling_params(make: Callable[..., SamplingParams], **kwargs: Any) -> SamplingParams:
    """`make(**kwargs)`, its range errors as 422 validation errors."""
    try:
        return make(**kwargs)
    except ValidationError as e:
        raise validation(str(e)) from None


class Validator:
    """Tokenizes and checks requests against the server's limits."""

    def __init__(self, tokenizer: Any, limits: Limits, model_id: str | None = None) -> None:
        self.tokenizer, self.limits, self.model_id = tokenizer, limits, model_id
        self.adapters: set[str] = set()   # the LoRA adapters loaded in the engine (kept current by their routes)

    def adapter(self, name: str | None, *, openai: bool = False) -> str | None:
        """The adapter a request names (None: the base model), or 422 (TGI) / 404 (OpenAI) with the known names.

        The base model's name, an empty name, TGI's "tgi" and huggingface_hub's "dummy" (what its
        InferenceClient sends when given a server URL) select the base model. Without any adapter
        loaded, an OpenAI `model` is not checked: clients send whatever name they were configured with.
        """
        if name in (None, "", "tgi", "dummy", self.model_id) or (openai and not self.adapters):
            return None
        if name in self.adapters:
            return name
        known = ", ".join(sorted(self.adapters)) or "none"
        message = f"adapter {name!r} is not loaded (base model: {self.model_id!r}; adapters: {known})"
        raise ServeError("not_found", message) if openai else validation(message)

    def tokenize(self, text: str) -> list[int]:
        """Special tokens in the text (`<fim_prefix>`, …) are recognised as such, as llm-ls expects."""
        check_unicode(text)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def validate(self, inputs: str, parameters: GenerateParameters | None, *, stream: bool,
                 default_return_full_text: bool = False) -> ValidRequest:
        """A TGI body (`/generate`, `/generate_stream`, `/`)."""
        if parameters is None:           # TGI's default_parameters(): sampling when no parameters at all
            parameters = GenerateParameters(do_sample=True)
        p = parameters
        grammar = sampling_params(from_tgi, grammar=p.grammar) if p.grammar is not None else None
        adapter = self.adapter(p.adapter_id)
        best_of = self._best_of(p, stream=stream)
        if stream and p.decoder_input_details:
            raise validation("`decoder_input_details` == true is not supported when streaming tokens")
        params = sampling_params(
            SamplingParams, do_sample=bool(p.do_sample), temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
            typical_p=p.typical_p, repetition_penalty=p.repetition_penalty, frequency_penalty=p.frequency_penalty,
            seed=p.seed, stop=tuple(p.stop or ()), top_n_tokens=p.top_n_tokens or 0, details=bool(p.details),
            decoder_input_details=bool(p.decoder_input_details), adapter_id=adapter, watermark=bool(p.watermark),
            grammar=grammar, speculate=p.speculate,
            **({} if p.max_new_tokens is None else {"max_new_tokens": p.max_new_tokens}))
        full = p.return_full_text if p.return_full_text is not None else default_return_full_text
        valid = self.check(inputs, params, fill=p.max_new_tokens is None, truncate=p.truncate,
                           return_full_text=bool(full))
        return dataclasses.replace(valid, best_of=best_of) if best_of != 1 else valid

    def _best_of(self, p: GenerateParameters, *, stream: bool) -> int:
        """TGI's best_of rules, in its order and with its messages (`router/src/validation.rs`)."""
        best_of = 1 if p.best_of is None else p.best_of
        if best_of == 1:
            return 1
        sampling = bool(p.do_sample) or any(v is not None for v in (p.temperature, p.top_k, p.top_p, p.typical_p))
        if best_of > 1 and not sampling:
            raise validation("you must use sampling when `best_of` is > 1")
        if best_of > 1 and p.seed is not None:
            raise validation("`seed` must not be set when `best_of` > 1")
        if stream:
            raise validation("`best_of` != 1 is not supported when streaming tokens")
        if self.limits.max_best_of == 1:
            raise validation("`best_of` != 1 is not allowed for this endpoint")
        if not 0 < best_of <= self.limits.max_best_of:
            raise validation(f"`best_of` must be > 0 and <= {self.limits.max_best_of}. Given: {best_of}")
        return best_of

    def validate_openai(self, prompt: str | list[int], *, max_tokens: int | None, model: str | None = None,
                        logprobs: int | None = None, echo: bool = False,
                        max_logprobs: int = OPENAI_MAX_LOGPROBS, response_format: Any = None,
                        speculate: int | None = None, **openai: Any) -> ValidRequest:
        """An OpenAI prompt (text or token ids) and its parameters (`SamplingParams.from_openai`); a null max_tokens
        fills the budget; `model` names an adapter (or the base model). `logprobs` (the number of alternatives per
        token) asks for the tokens' logprobs, and with `echo` for the prompt's too; `response_format` constrains
        the output."""
        adapter = self.adapter(model, openai=True)
        if openai.get("logit_bias") is not None:
            openai["logit_bias"] = self.logit_bias(openai["logit_bias"])
        if logprobs is not None and not 0 <= logprobs <= max_logprobs:
            name = "logprobs" if max_logprobs == OPENAI_MAX_LOGPROBS else "top_logprobs"
            raise validation(f"`{name}` must be >= 0 and <= {max_logprobs}. Given: {logprobs}")
        params = sampling_params(SamplingParams.from_openai, max_new_tokens=max_tokens, details=True,
                                 top_n_tokens=logprobs or 0, decoder_input_details=bool(echo and logprobs is not None),
                                 **openai)
        grammar = sampling_params(from_response_format, response_format=response_format)
        if grammar is not None or speculate is not None:
            params = sampling_params(lambda: dataclasses.replace(params, grammar=grammar, speculate=speculate))
        if adapter is not None:
            params = dataclasses.replace(params, adapter_id=adapter)
        if isinstance(prompt, list):
            return self.check(self._prompt_text(prompt), params, fill=max_tokens is None, input_ids=prompt,
                              max_top_n=max_logprobs)
        return self.check(prompt, params, fill=max_tokens is None, max_top_n=max_logprobs)

    def logit_bias(self, bias: dict[str, float]) -> dict[int, float]:
        """OpenAI's `logit_bias` (JSON keys are strings) as {token id: bias}; 422 for an id outside the vocabulary
        (the range of the biases is `SamplingParams`' rule)."""
        vocab = len(self.tokenizer)
        parsed: dict[int, float] = {}
        for key, value in bias.items():
            token = key.strip()
            if not token.isdigit() or not int(token) < vocab:
                raise validation(f"`logit_bias` keys must be token ids >= 0 and < {vocab} (the vocabulary). "
                                 f"Given: {key!r}")
            parsed[int(token)] = value
        return parsed

    def _prompt_text(self, ids: list[int]) -> str:
        vocab = len(self.tokenizer)
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise validation(f"`prompt` token ids must be >= 0 and < {vocab} (the vocabulary). Given: {bad[0]}")
        return self.tokenizer.decode(ids)

    def check(self, inputs: str, params: SamplingParams, *, fill: bool = False, truncate: int | None = None,
              return_full_text: bool = False, input_ids: list[int] | None = None,
              max_top_n: int | None = None) -> ValidRequest:
        """The server's limits and the token budgets, once; `fill`: max_new_tokens not given, take what fits.
        `input_ids`: the prompt as token ids (OpenAI), used as given; `max_top_n`: the route's own cap on
        alternatives per token (OpenAI's), instead of `max_top_n_tokens`."""
        lim = self.limits
        if not inputs and not input_ids:
            raise validation("`inputs` cannot be empty")
        if len(params.stop) > lim.max_stop_sequences:
            raise validation(f"`stop` supports up to {lim.max_stop_sequences} stop sequences. "
                             f"Given: {len(params.stop)}")
        if max_top_n is None and params.top_n_tokens > lim.max_top_n_tokens:
            raise validation(f"`top_n_tokens` must be >= 0 and <= {lim.max_top_n_tokens}. "
                             f"Given: {params.top_n_tokens}")
        if truncate is not None and not 0 < truncate <= lim.max_input_tokens:
            raise validation(f"`truncate` must be strictly positive and less than {lim.max_input_tokens}. "
                             f"Given: {truncate}")
        ids = list(input_ids) if input_ids else self.tokenize(inputs)
        if not ids:
            raise validation("`inputs` cannot be empty")
        if truncate is not None and len(ids) > truncate:
            ids = ids[-truncate:]
            inputs = self.tokenizer.decode(ids)
        if len(ids) > lim.max_input_tokens:
            raise validation(f"`inputs` tokens must be <= {lim.max_input_tokens}. Given: {len(ids)}")
        max_new = lim.max_total_tokens - len(ids) if fill else params.max_new_tokens
        if len(ids) + max_new > lim.max_total_tokens:
            raise validation(f"`inputs` tokens + `max_new_tokens` must be <= {lim.max_total_tokens}. "
                             f"Given: {len(ids)} `inputs` tokens and {max_new} `max_new_tokens`")
        if max_new != params.max_new_tokens:
            params = dataclasses.replace(params, max_new_tokens=max_new)
        return ValidRequest(ids, params.with_seed(), inputs, return_full_text)


def check_unicode(text: str) -> None:
    """JSON can carry a lone surrogate (`"\\ud800"`), which is no Unicode text: the tokenizer cannot take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise validation(f"`inputs` is not valid Unicode text: a lone surrogate at character {e.start}") from None


def check_prompt_count(prompts: list[str], max_client_batch_size: int) -> None:
    if not prompts:
        raise validation("`prompt` cannot be empty")
    if len(prompts) > max_client_batch_size:
        raise ServeError("validation", f"Number of prompts exceeds the maximum allowed batch size of "
                                       f"{max_client_batch_size}. Given: {len(prompts)}")


def check_choices(n: int | None, best_of: int | None, *, stream: bool, limit: int) -> tuple[int, int]:
    """OpenAI's `n` and `best_of` (best_of >= n; best_of > n cannot stream, as OpenAI documents); both resolved."""
    n = 1 if n is None else n
    if not 1 <= n <= limit:
        raise validation(f"`n` must be >= 1 and <= {limit}. Given: {n}")
    best_of = n if best_of is None else best_of
    if not n <= best_of <= limit:
        raise validation(f"`best_of` must be >= `n` and <= {limit}. Given: best_of={best_of}, n={n}")
    if stream and best_of > n:
        raise validation("`best_of` > `n` is not supported when streaming (the best are known only at the end)")
    return n, best_of


# OpenAI (and vLLM-extension) parameters that change what is generated and that this server does not implement,
# with the value that means "off": any other value is refused, never silently dropped. Fields that do not change
# the output (`user`, `store`, `metadata`, `service_tier`, `parallel_tool_calls`, `prediction`) are ignored, as
# unknown fields are in TGI.
UNSUPPORTED_OPENAI: dict[str, tuple[Any, ...]] = {
    "functions": (), "function_call": (), "audio": (), "web_search_options": (), "modalities": (["text"],),
    "top_k": (-1, 0), "min_p": (0, 0.0), "typical_p": (1, 1.0), "min_tokens": (0,), "ignore_eos": (False,),
    "stop_token_ids": ([],), "bad_words": ([],), "allowed_token_ids": (), "use_beam_search": (False,),
    "length_penalty": (1, 1.0), "include_stop_str_in_output": (False,), "skip_special_tokens": (True,),
    "prompt_logprobs": (), "logits_processors": (), "truncate_prompt_tokens": (), "guided_json": (),
    "guided_regex": (), "guided_choice": (), "guided_grammar": (), "structured_outputs": (),
}
_INSTEAD = {"functions": "use `tools`", "function_call": "use `tool_choice`",
            **{k: "use `response_format`" for k in ("guided_json", "guided_regex", "guided_choice", "guided_grammar",
                                                    "structured_outputs")}}


def check_unsupported(extra: dict[str, Any] | None) -> None:
    """422 naming the first parameter of `extra` (the fields the schema does not declare) that would change the
    output and is not implemented here."""
    for name, value in (extra or {}).items():
        if name in UNSUPPORTED_OPENAI and value is not None and value not in UNSUPPORTED_OPENAI[name]:
            hint = _INSTEAD.get(name, "leave it out")
            raise validation(f"`{name}` is not supported by this server ({hint}). Given: {value!r}")


def check_text_content(content: Any) -> None:
    """422 for a message content part that is not text: this is a text model, and a dropped image or audio
    part would change the question silently."""
    if isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind != "text":
                raise validation(f"message content parts must be text (this model reads text only). Given: a "
                                 f"{kind!r} part")


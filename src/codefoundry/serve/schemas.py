"""Request and response bodies of the TGI and OpenAI routes (pydantic; they also make the OpenAPI schema).

Types only: the range rules live in `SamplingParams` and the server's limits in `validation.py`,
so errors carry TGI's messages. Unknown fields are ignored and every parameter accepts null, as
in TGI (`router/src/lib.rs`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from codefoundry import __version__

MAX_BEST_OF = 2                       # TGI's default --max-best-of
MAX_CHOICES = 16                      # OpenAI's n and best_of, per prompt (the server's own cap)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GenerateParameters(_Lenient):
    """TGI's `GenerateParameters`: every field optional and nullable."""

    best_of: int | None = Field(None, description="Sample this many sequences, return the best (> 0, <= max_best_of).")
    temperature: float | None = Field(None, description="Logits divided by it (> 0).", examples=[0.5])
    repetition_penalty: float | None = Field(None, description="> 0; 1.0 means no penalty.", examples=[1.03])
    frequency_penalty: float | None = Field(None, description="In [-2, 2].", examples=[0.1])
    top_k: int | None = Field(None, description="Keep the k best tokens (> 0).", examples=[10])
    top_p: float | None = Field(None, description="Nucleus sampling, strictly inside (0, 1).", examples=[0.95])
    typical_p: float | None = Field(None, description="Typical sampling, strictly inside (0, 1).", examples=[0.95])
    do_sample: bool | None = Field(None, description="Sample instead of greedy (default false).")
    max_new_tokens: int | None = Field(None, description="> 0; null = max_total_tokens - input tokens.",
                                       examples=[20])
    return_full_text: bool | None = Field(None, description="Prepend the prompt to generated_text.")
    stop: list[str] | None = Field(None, description="Stop strings (at most max_stop_sequences); kept in the text.")
    truncate: int | None = Field(None, description="Keep the last N input tokens (0 < N <= max_input_tokens).")
    watermark: bool | None = Field(None, description="Kirchenbauer et al. green-list watermark (TGI's gamma 0.5, "
                                                     "delta 2.0, seeded by the previous token).")
    details: bool | None = Field(None, description="Return per-token details.")
    decoder_input_details: bool | None = Field(None, description="Return prompt token logprobs (not when streaming).")
    seed: int | None = Field(None, description="u64 sampling seed; random when null.")
    top_n_tokens: int | None = Field(None, description="Alternatives per token (<= max_top_n_tokens).")
    grammar: Any | None = Field(None, description='Constrained output: {"type": "json", "value": SCHEMA} or '
                                                  '{"type": "regex", "value": RE}; invalid = 422.')
    speculate: int | None = Field(None, description="Prompt-lookup draft tokens per step (0 = off; null = the "
                                                    "server's --speculate).")
    adapter_id: str | None = Field(None, description="A loaded LoRA adapter's name (GET /v1/adapters); null or "
                                                     "the model id = the base model; unknown = 422.")


class GenerateRequest(_Lenient):
    inputs: str = Field(..., examples=["<fim_prefix>def f(x):\n    <fim_suffix>\n    return y<fim_middle>"])
    parameters: GenerateParameters | None = None


class CompatGenerateRequest(GenerateRequest):
    stream: bool = False


class Token(BaseModel):
    id: int
    text: str
    logprob: float | None
    special: bool


class PrefillToken(BaseModel):
    id: int
    text: str
    logprob: float | None


class _SequenceDetails(BaseModel):
    """What TGI reports of one generated sequence: the returned one (`Details`) and each other `best_of` one."""

    finish_reason: Literal["length", "eos_token", "stop_sequence"]
    generated_tokens: int
    seed: int | None
    prefill: list[PrefillToken]
    tokens: list[Token]
    top_tokens: list[list[Token]] | None = None


class BestOfSequence(_SequenceDetails):
    generated_text: str


class Details(_SequenceDetails):
    best_of_sequences: list[BestOfSequence] | None = None


class GenerateResponse(BaseModel):
    generated_text: str
    details: Details | None = None


class StreamDetails(BaseModel):
    finish_reason: Literal["length", "eos_token", "stop_sequence"]
    generated_tokens: int
    seed: int | None
    input_length: int


class StreamResponse(BaseModel):
    index: int
    token: Token
    top_tokens: list[Token] | None = None
    generated_text: str | None = None
    details: StreamDetails | None = None


class SimpleToken(BaseModel):
    id: int
    text: str
    start: int                         # byte offsets in the input
    stop: int


class ErrorBody(BaseModel):
    error: str
    error_type: str


class Info(BaseModel):
    """TGI's `/info`: the model and the router's limits (those fixed here have their TGI-compatible defaults)."""

    model_config = ConfigDict(protected_namespaces=())

    model_id: str
    model_sha: str | None = None
    model_pipeline_tag: str | None = "text-generation"
    model_dtype: str
    model_device_type: str
    quantize: str | None = Field(None, description=(
        "Weight-only quantization of the linear layers (int8, int4); null: float weights in model_dtype"))
    max_concurrent_requests: int
    max_best_of: int = MAX_BEST_OF
    max_stop_sequences: int
    max_input_tokens: int
    max_total_tokens: int
    max_batch_total_tokens: int
    max_batch_prefill_tokens: int
    max_waiting_tokens: int = 0
    waiting_served_ratio: float = 0.0
    validation_workers: int = 1
    max_client_batch_size: int
    router: str = "text-generation-router"
    version: str = __version__
    sha: str | None = None
    docker_label: str | None = None
    adapters: list[str] = Field(default_factory=list, description="LoRA adapters loaded (names for adapter_id)")
    lineage: dict[str, Any] = Field(default_factory=dict, description=(
        "What the model and each adapter were made from, from their manifest.json files: training datasets "
        "(manifest and card sha256, license policy, decontamination benchmarks, opt-out list sha256), tokenizer, "
        "training config, base model, merged adapters; `known: false` where no training data is recorded"))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max_input_length(self) -> int:
        """`max_input_tokens` under its name before TGI 2.1 (clients still read it)."""
        return self.max_input_tokens


# ---- OpenAI ----

class StreamOptions(_Lenient):
    include_usage: bool | None = None


class _OpenAIRequest(BaseModel):
    """The sampling and streaming fields `/v1/completions` and `/v1/chat/completions` share. Undeclared fields
    are kept (`model_extra`) so that the routes refuse those that would change the output."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = Field(None, description="0 means greedy.")
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = Field(None, description="json_object or json_schema: constrained output.")
    speculate: int | None = Field(None, description="Prompt-lookup draft tokens per step (0 = off).")
    logit_bias: dict[str, float] | None = Field(None, description="Token id → bias in [-100, 100], added to the "
                                                                  "logits before sampling (unknown id = 422).")
    repetition_penalty: float | None = Field(None, description="> 0; 1.0 means no penalty (CTRL, as TGI and vLLM).")


class CompletionRequest(_OpenAIRequest):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        ..., description="Text, texts, token ids, or lists of token ids (at most max_client_batch_size prompts).")
    suffix: str | None = Field(None, description="Text after the completion: the prompt becomes the model's "
                                                 "fill-in-the-middle prompt (422 for a model without FIM tokens).")
    n: int | None = Field(None, description="Choices per prompt; they share the prompt's KV blocks.")
    best_of: int | None = Field(None, description="Sequences generated per prompt; the n with the highest mean "
                                                  "token logprob are returned (not with stream).")
    logprobs: int | None = Field(None, description="Logprobs of each token and of the `logprobs` most likely ones.")
    echo: bool | None = Field(None, description="Prepend the prompt (and its tokens' logprobs) to the choice.")


class ChatMessage(_Lenient):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ChatRequest(_OpenAIRequest):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    n: int | None = Field(None, description="Choices; they share the prompt's KV blocks.")
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = Field(None, description="Rendered by the model's chat template (422 when "
                                                                 "the template does not take tools).")
    tool_choice: str | dict[str, Any] | None = Field(None, description="`auto` or `none`.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

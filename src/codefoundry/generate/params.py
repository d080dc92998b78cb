"""Per-request generation parameters with TGI's names, defaults and validation rules.

The rules follow TGI's router (`router/src/validation.rs`): `temperature`, `top_k` and
`repetition_penalty` must be > 0, `top_p` and `typical_p` strictly inside (0, 1),
`frequency_penalty` and `presence_penalty` in [-2, 2], `max_new_tokens` > 0, every float finite.
Sampling happens when `do_sample` is set or any warper is active (temperature != 1, top_k,
top_p < 1, typical_p < 1), as in TGI's `NextTokenChooser`; otherwise decoding is greedy.

These are the only range rules: the server adds its own limits (stop count, token budgets),
and `SamplingParams.from_openai` is the one mapping from OpenAI's parameters (temperature 0
= greedy, top_p 1 = off) that the server's OpenAI routes and the eval harness share.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from codefoundry.errors import UserError

U64_MAX = 2**64 - 1
MAX_SPECULATE = 64                            # draft tokens per step: more is never verified usefully
_FLOATS = ("temperature", "top_p", "typical_p", "repetition_penalty", "frequency_penalty", "presence_penalty")


class FinishReason(StrEnum):
    """Why a sequence stopped, with TGI's names."""

    LENGTH = "length"
    EOS_TOKEN = "eos_token"
    STOP_SEQUENCE = "stop_sequence"


class ValidationError(UserError):
    """A generation parameter is out of range; the message names the field, the limit and the value."""


@dataclass(frozen=True)
class SamplingParams:
    """What to generate for one prompt. `None` means "not set" (TGI's nulls)."""

    do_sample: bool = False
    temperature: float | None = None          # > 0; 1.0 = unchanged
    top_k: int | None = None                  # > 0; None = all tokens
    top_p: float | None = None                # in (0, 1)
    typical_p: float | None = None            # in (0, 1)
    repetition_penalty: float | None = None   # > 0; 1.0 = none (CTRL paper, as HF/TGI)
    frequency_penalty: float | None = None    # in [-2, 2]; TGI: score -= penalty * count / tokens so far
    presence_penalty: float | None = None     # in [-2, 2]; TGI/OpenAI: score -= penalty if the token occurred
    seed: int | None = None                   # u64; chosen at random when sampling and None
    max_new_tokens: int = 20                  # TGI python client's default
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False                  # keep going past EOS (benchmarks, parity tests)
    top_n_tokens: int = 0                     # alternatives per generated token (TGI caps at 5 in the server)
    details: bool = False                     # per-token details wanted (the engine always records logprobs)
    decoder_input_details: bool = False       # logprobs of the prompt tokens too
    adapter_id: str | None = None             # the LoRA adapter to generate with, by name (TGI); None = base model
    # API completeness: TGI's watermark and OpenAI's penalty definitions
    watermark: bool = False                   # Kirchenbauer et al. green-list bias, as TGI (sampler.apply_watermark)
    openai_penalties: bool = False            # frequency/presence count generated tokens only, not normalized (OpenAI)
    # speculative decoding and constrained output
    speculate: int | None = None              # draft tokens per step (prompt lookup); 0 = off, None = the engine's
    grammar: tuple[str, str] | None = None    # ("json", schema as JSON text) or ("regex", pattern): constrained output
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias in [-100, 100]) added to logits (OpenAI)

    def __post_init__(self) -> None:
        if self.grammar is not None and not isinstance(self.grammar, tuple):   # a list, after a msgpack round trip
            object.__setattr__(self, "grammar", tuple(self.grammar))
        if not isinstance(self.logit_bias, tuple) or any(not isinstance(b, tuple) for b in self.logit_bias):
            object.__setattr__(self, "logit_bias", tuple(tuple(b) for b in self.logit_bias))
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
        self.validate()

    def validate(self) -> None:
        """Raise `ValidationError` (field, limit, given value) for any out-of-range field."""
        def bad(name: str, rule: str, value: object) -> ValidationError:
            return ValidationError(f"`{name}` must be {rule}. Given: {value!r}")

        for name in _FLOATS:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise bad(name, "a finite number", value)
        if self.temperature is not None and not self.temperature > 0:
            raise bad("temperature", "strictly positive", self.temperature)
        if self.top_k is not None and not self.top_k > 0:
            raise bad("top_k", "strictly positive", self.top_k)
        for name in ("top_p", "typical_p"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise bad(name, "> 0.0 and < 1.0", value)
        if self.repetition_penalty is not None and not self.repetition_penalty > 0:
            raise bad("repetition_penalty", "strictly positive", self.repetition_penalty)
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            if value is not None and not -2.0 <= value <= 2.0:
                raise bad(name, ">= -2.0 and <= 2.0", value)
        if not self.max_new_tokens > 0:
            raise bad("max_new_tokens", "strictly positive", self.max_new_tokens)
        if self.seed is not None and not 0 <= self.seed <= U64_MAX:
            raise bad("seed", f"an unsigned 64-bit integer (0 to {U64_MAX})", self.seed)
        if self.top_n_tokens < 0:
            raise bad("top_n_tokens", ">= 0", self.top_n_tokens)
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise bad("stop", "a list of non-empty strings", list(self.stop))
        if self.speculate is not None and not 0 <= self.speculate <= MAX_SPECULATE:
            raise bad("speculate", f">= 0 and <= {MAX_SPECULATE}", self.speculate)
        for pair in self.logit_bias:
            if len(pair) != 2 or not isinstance(pair[0], int) or isinstance(pair[0], bool) or pair[0] < 0:
                raise bad("logit_bias", "a map of token ids (integers >= 0) to numbers", dict(self.logit_bias))
            if isinstance(pair[1], bool) or not isinstance(pair[1], int | float) or not -100 <= pair[1] <= 100:
                raise bad("logit_bias", f"a map of token ids to numbers >= -100 and <= 100 (token {pair[0]})",
                          pair[1])
        if self.grammar is not None and (len(self.grammar) != 2 or not all(isinstance(g, str) for g in self.grammar)):
            raise bad("grammar", "a (type, value) pair of strings", self.grammar)

    @classmethod
    def from_openai(cls, *, temperature: float | None = None, top_p: float | None = None,
                    max_new_tokens: int | None = None, stop: str | Sequence[str] | None = None,
                    seed: int | None = None, frequency_penalty: float | None = None,
                    presence_penalty: float | None = None, repetition_penalty: float | None = None,
                    details: bool = False, top_n_tokens: int = 0, decoder_input_details: bool = False,
                    logit_bias: dict[int, float] | None = None) -> SamplingParams:
        """OpenAI's parameters (what `/v1/completions` takes and the eval harness sets) as `SamplingParams`.

        Temperature 0 is greedy whatever top_p says (OpenAI, vLLM); a null temperature samples at 1
        (OpenAI's default); top_p of 1 or more means no nucleus filter. `max_new_tokens` None keeps
        the default (a server resolves a missing `max_tokens` against its own budget). Frequency and
        presence penalties follow OpenAI's definition (counts of generated tokens, not normalized).
        `logit_bias` maps token ids to a bias in [-100, 100] added to their logits before any choice.
        """
        greedy = temperature == 0
        return cls(do_sample=not greedy, temperature=None if greedy else temperature,
                   top_p=None if greedy or (top_p is not None and top_p >= 1.0) else top_p,
                   frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                   repetition_penalty=repetition_penalty, seed=seed,
                   max_new_tokens=cls.max_new_tokens if max_new_tokens is None else max_new_tokens,
                   stop=() if stop is None else stop, details=details, top_n_tokens=top_n_tokens,
                   decoder_input_details=decoder_input_details, openai_penalties=True,
                   logit_bias=tuple(sorted((logit_bias or {}).items())))

    def with_seed(self) -> SamplingParams:
        """A copy whose seed is fixed: drawn at random when sampling without one, so replies can report it."""
        if self.sampling and self.seed is None:
            return dataclasses.replace(self, seed=secrets.randbits(64))
        return self

    @property
    def sampling(self) -> bool:
        """True when the next token is drawn at random (TGI: do_sample or any warper active)."""
        return (self.do_sample or (self.temperature is not None and self.temperature != 1.0)
                or self.top_k is not None or self.top_p is not None or self.typical_p is not None)

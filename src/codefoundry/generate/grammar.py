"""Grammar-constrained output: a JSON schema or a regex turned into a per-step token mask (llguidance).

TGI's `grammar` parameter (`{"type": "json", "value": SCHEMA}` / `{"type": "regex", "value": RE}`)
and OpenAI's `response_format` (`json_schema`, `json_object`) both become a `SamplingParams.grammar`
pair `(kind, value)` of plain strings (it crosses the engine-core process boundary as is). The
engine compiles it once per request into an `llguidance.LLMatcher` over the model's tokenizer;
each step the matcher's bitmask says which tokens keep the output inside the grammar, the
sampler sets the others to -inf before penalties and warpers (`Sampler.sample(..., masks=)`),
and the sampled token advances the matcher. Constrained and free requests share a batch: a free
row simply has no mask. When the grammar is complete only EOS is allowed, so the request ends.
A matcher that fails (it runs out of fuel on a hostile grammar, or cannot be built) also allows
only EOS, but its `error` says why: the engine ends that request with the error, never with an
output that merely looks complete.

llguidance was picked over outlines-core by bench/grammar.py (SmolLM2's 49k-token vocabulary;
numbers in bench/RESULTS.md): outlines-core's precomputed index makes a mask about 1.5x cheaper
per token, but building that index costs seconds for every new schema, where llguidance computes
masks lazily from the tokenizer's token trie (tens of milliseconds per schema), so a constrained
request of a few hundred tokens is far cheaper end to end. It also takes a Hugging Face fast
tokenizer as is (byte-level tokens included). xgrammar's wheel pulls a CUDA torch: not used.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from codefoundry.generate.params import ValidationError

KINDS = ("json", "regex")
log = logging.getLogger(__name__)


class GrammarError(ValidationError):
    """A grammar that cannot be compiled (bad schema or regex); the message says why."""


def grammar_source(kind: str, value: str) -> str:
    """llguidance's grammar text for a `(kind, value)` pair; `GrammarError` for an unknown kind or bad value."""
    import llguidance

    if kind == "json":
        try:
            schema = json.loads(value)
        except json.JSONDecodeError as e:
            raise GrammarError(f"grammar: the JSON schema is not valid JSON: {e}") from None
        if not isinstance(schema, dict | bool):
            raise GrammarError("grammar: a JSON schema must be an object (or true/false)")
        try:
            return llguidance.LLMatcher.grammar_from_json_schema(
                schema, defaults={"whitespace_flexible": False})
        except (ValueError, TypeError, RuntimeError) as e:
            raise GrammarError(f"grammar: invalid JSON schema: {e}") from None
    if kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(value)
    raise GrammarError(f"grammar: `type` must be one of {', '.join(KINDS)}. Given: {kind!r}")


def check_grammar(kind: str, value: str) -> None:
    """Raise `GrammarError` with the compiler's message when `(kind, value)` does not compile (no tokenizer needed)."""
    import llguidance

    source = grammar_source(kind, value)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(source)
    if is_error:
        detail = " ".join(" ".join(m.split()) for m in messages) or "it does not compile"
        raise GrammarError(f"grammar: invalid {'JSON schema' if kind == 'json' else 'regex'}: {detail}")


class GrammarCompiler:
    """The tokenizer in llguidance's form (built once: about a second for a 50k vocabulary), and matchers from it."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self._ll: Any = None
        self._pool: ThreadPoolExecutor | None = None

    def prepare(self, grammar: tuple[str, str], eos_ids: set[int]) -> Future[GrammarMatcher]:
        """A matcher with its first mask computed, built on this compiler's worker thread. A hostile grammar
        (`(a{1000}){1000}`) spends seconds there, in llguidance's lexer without the GIL, and then fails its
        fuel limit: its matcher allows only EOS and has an `error`. A grammar that cannot be built at all ends
        the same way."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="grammar")

        def build() -> GrammarMatcher:
            try:
                matcher = self.matcher(grammar)
                matcher.allowed()
                return matcher
            except Exception as e:  # checked before it was queued: only llguidance's own failure gets here
                log.exception("grammar %r could not be compiled", grammar[0])
                return EosOnly(eos_ids, self.vocab_size, f"the grammar could not be compiled: {e}")

        return self._pool.submit(build)

    def matcher(self, grammar: tuple[str, str]) -> GrammarMatcher:
        import llguidance
        import llguidance.hf

        if self._ll is None:
            self._ll = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size)
        matcher = llguidance.LLMatcher(self._ll, grammar_source(*grammar), log_level=0)
        if matcher.is_error():
            raise GrammarError(f"grammar: {matcher.get_error()}")
        return GrammarMatcher(matcher, self.vocab_size)


class GrammarMatcher:
    """One request's position in its grammar: the mask of allowed next tokens, advanced token by token."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        self._m, self.vocab_size = matcher, vocab_size
        self._mask: torch.Tensor | None = None   # for the current position (the first is computed ahead)

    def allowed(self) -> torch.Tensor:
        """A bool tensor [vocab_size]: True where the token keeps the output inside the grammar."""
        if self._mask is None:
            bits = np.frombuffer(self._m.compute_bitmask(), dtype=np.uint8)
            self._mask = torch.from_numpy(np.unpackbits(bits, bitorder="little")[:self.vocab_size].astype(bool))
        return self._mask

    def advance(self, token_id: int) -> None:
        self._mask = None
        self._m.consume_token(token_id)

    @property
    def done(self) -> bool:
        """The grammar is complete (only EOS may follow) or broken."""
        return self._m.is_stopped() or self._m.is_error()

    @property
    def error(self) -> str | None:
        """Why the matcher failed (out of fuel, a token it could not take), None while it works."""
        if not self._m.is_error():
            return None
        # the first line says what ran out; llguidance's verbose rest is parser state (it may quote the schema)
        lines = self._m.get_error().strip().splitlines() or ["unknown error"]
        return f"the grammar failed: {lines[0][:300]}"


class EosOnly(GrammarMatcher):
    """A grammar that failed: only EOS may follow, as llguidance's own matcher does once it errs."""

    def __init__(self, eos_ids: set[int], vocab_size: int, error: str) -> None:
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[[i for i in eos_ids if i < vocab_size]] = True
        super().__init__(None, vocab_size)
        self._eos, self._error = mask, error

    def allowed(self) -> torch.Tensor:
        return self._eos

    def advance(self, token_id: int) -> None:
        pass

    @property
    def done(self) -> bool:
        return True

    @property
    def error(self) -> str | None:
        return self._error


def _schema_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise GrammarError(f"{where}: the JSON schema is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise GrammarError(f"{where}: a JSON schema must be an object. Given: {value!r}")
    return json.dumps(value)


def from_tgi(grammar: Any) -> tuple[str, str]:
    """TGI's `grammar` body (`{"type": "json" | "json_object" | "json_schema" | "regex", "value": …}`) as a
    checked `(kind, value)` pair; `GrammarError` (a 422) says what is wrong."""
    if not isinstance(grammar, dict) or "type" not in grammar or "value" not in grammar:
        raise GrammarError('grammar must be {"type": "json" | "regex", "value": …}')
    kind, value = grammar["type"], grammar["value"]
    if kind in ("json", "json_object"):
        pair = ("json", _schema_text(value, "grammar"))
    elif kind == "json_schema":                      # TGI: {"name", "schema", "strict"}
        if not isinstance(value, dict) or "schema" not in value:
            raise GrammarError('grammar: a "json_schema" value must be {"name": …, "schema": {…}}')
        pair = ("json", _schema_text(value["schema"], "grammar"))
    elif kind == "regex":
        if not isinstance(value, str) or not value:
            raise GrammarError("grammar: a regex value must be a non-empty string")
        pair = ("regex", value)
    else:
        raise GrammarError(f"grammar: `type` must be json, json_object, json_schema or regex. Given: {kind!r}")
    check_grammar(*pair)
    return pair


def from_response_format(response_format: Any) -> tuple[str, str] | None:
    """OpenAI's `response_format` (`text`, `json_object`, `json_schema`) as a checked pair (None: free text)."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        pair = ("json", json.dumps({"type": "object"}))
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise GrammarError('response_format: "json_schema" must be {"name": …, "schema": {…}}')
        pair = ("json", _schema_text(spec["schema"], "response_format"))
    else:
        raise GrammarError(f"response_format: `type` must be text, json_object or json_schema. Given: {kind!r}")
    check_grammar(*pair)
    return pair

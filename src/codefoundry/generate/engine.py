"""The step-wise engine and `generate()`, its synchronous batch wrapper.

`Engine.step()` is vLLM v1's loop in one call: the `Scheduler` plans the step (which requests
compute how many tokens, chunked prefill, preemption), the `ModelRunner` computes their
logits, the `Sampler` picks the next tokens of the requests that caught up, each request's
`IncrementalDetokenizer` and `StopChecker` turn its token into text and decide whether it
is done, and the scheduler takes the results back (tokens appended, finished requests
freed). A preempted request is recomputed later from its prompt and the tokens it already
has, so its output does not change.

LoRA adapters (`add_adapter(name, dir)`, PEFT format) apply per request: a request names one
in `SamplingParams.adapter_id`, and one step's forward runs every request through its own
adapter or the base model together (`generate.adapters`, `model.lora`).

Prefix caching is on by default (`enable_prefix_caching`): a request whose prompt starts
with full KV blocks that an earlier request computed (same tokens, same adapter) reuses them
and computes only the rest, with identical outputs; `stats()` reports the hit rate.

    engine = Engine(model, tokenizer, num_blocks=512)
    engine.add_request("a", prompt_ids, SamplingParams(max_new_tokens=64))
    while engine.has_unfinished():
        for event in engine.step().outputs:      # one StepOutput per request that got a token
            event.token.text, event.text, event.completion

Speculative decoding (`speculate=k` here, or `SamplingParams.speculate` per request) drafts up
to k tokens per step by prompt lookup (`generate.speculative`) and verifies them in the same
forward; outputs are unchanged (greedy and seeded alike), and a request then gets several
StepOutputs in one step, one per kept token, in order. Grammar-constrained requests
(`SamplingParams.grammar`, `generate.grammar`) get their token mask in the batched sampler
and never speculate; their grammar is compiled on a worker thread, so one that takes seconds
delays only its own request.

The engine is not thread-safe: one thread steps it, and adds or aborts between steps.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Hashable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from codefoundry.console import progress_bar
from codefoundry.generate.adapters import AdapterError, AdapterRegistry
from codefoundry.generate.detokenizer import IncrementalDetokenizer
from codefoundry.generate.grammar import GrammarCompiler, GrammarMatcher, check_grammar
from codefoundry.generate.kv_cache import KVCacheManager
from codefoundry.generate.params import FinishReason, SamplingParams, ValidationError
from codefoundry.generate.runner import ModelRunner, ScheduledSequence
from codefoundry.generate.sampler import Sampler, SampleRow
from codefoundry.generate.scheduler import Request, Scheduler, SchedulerOutput
from codefoundry.generate.speculative import Drafted, NgramProposer, num_accepted
from codefoundry.generate.stop import Stop, StopChecker
from codefoundry.model import kv_cache_bytes_per_block

DEFAULT_MAX_BATCH_TOKENS = 2048        # tokens computed per step (prefill chunks + decodes)
DEFAULT_MAX_BATCH_SIZE = 256           # sequences per step
GRAMMAR_WAIT_S = 0.05                  # an idle step's wait for a compiling grammar (the loop still sees aborts)
DEFAULT_KV_CACHE_BYTES = 1 << 30       # cap on generate()'s default pool: 1 GiB of K/V


@dataclass
class GeneratedToken:
    """One generated token as TGI's `details.tokens` shows it."""

    id: int
    text: str                          # the text this token completed (TGI: incremental, special tokens kept)
    logprob: float
    special: bool
    top_tokens: list[tuple[int, float]] = field(default_factory=list)   # (id, logprob) alternatives, best first


@dataclass
class Completion:
    """The result for one prompt."""

    text: str                          # generated text, special tokens skipped; a stop string stays in (TGI)
    token_ids: list[int]               # generated ids (EOS included when it ended the sequence)
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None                   # the seed used when sampling, None for greedy (TGI)
    tokens: list[GeneratedToken]
    prompt_token_ids: list[int]
    stop_sequence: str | None = None
    prefill_logprobs: list[float | None] | None = None   # per prompt token (first None), if asked
    prefill_top_tokens: list[list[tuple[int, float]]] | None = None   # per prompt token (first []), with top_n_tokens
    error: str | None = None           # the request failed (its grammar broke): `text` is not a valid output

    @property
    def logprobs(self) -> list[float]:
        return [t.logprob for t in self.tokens]

    @property
    def text_before_stop(self) -> str:
        """`text` without the stop string that ended it (what evaluation harnesses want)."""
        return self.text[:-len(self.stop_sequence)] if self.stop_sequence else self.text


@dataclass
class StepOutput:
    """What one step produced for one request."""

    request_id: Hashable
    token: GeneratedToken
    text: str                          # what this token added to the generated text (cut at a stop string)
    completion: Completion | None      # set when the request finished with this token


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's load (what a server's gauges show)."""

    num_waiting: int                   # requests queued, not in the running batch
    num_running: int                   # requests in the running batch
    num_blocks: int                    # KV pool size, in blocks
    num_used_blocks: int
    block_size: int                    # token slots per block
    num_preemptions: int               # since the engine was made
    num_cached_blocks: int = 0         # blocks findable by the prefix cache (held or free)
    prefix_cache_queries: int = 0      # prompt tokens looked up at admission, since start
    prefix_cache_hits: int = 0         # of which were cached
    spec_draft_tokens: int = 0         # draft tokens verified (speculative decoding), since start
    spec_accepted_tokens: int = 0      # of which were kept

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0

    @property
    def spec_acceptance_rate(self) -> float:
        return self.spec_accepted_tokens / self.spec_draft_tokens if self.spec_draft_tokens else 0.0


@dataclass
class EngineOutputs:
    """What one `Engine.step()` did."""

    outputs: list[StepOutput]          # one per request that got a token, in batch order
    num_scheduled: int                 # requests that computed tokens this step (0: nothing could run)
    admitted_ids: list[Hashable]       # requests that entered the running batch this step
    preempted_ids: list[Hashable]      # requests sent back to waiting this step (to be recomputed)


class _RequestState:
    """The engine's side of one request: how it samples, and its text so far (the tokens are the scheduler's)."""

    def __init__(self, request: Request, params: SamplingParams, seed: int | None, tokenizer: Any,
                 eos_ids: set[int], speculate: int, grammar: GrammarMatcher | None = None) -> None:
        self.request, self.params, self.seed = request, params, seed
        self.speculate = speculate         # draft tokens per step (0: no speculation)
        self.grammar = grammar             # the allowed next tokens, when the output is constrained
        self.detok = IncrementalDetokenizer(tokenizer, request.prompt_token_ids, skip_special_tokens=False)
        self.stopper = StopChecker(params.max_new_tokens, params.stop, eos_ids, params.ignore_eos)
        self.tokens: list[GeneratedToken] = []
        self.text = ""
        self.prefill_logprobs: list[float | None] | None = [None] if params.decoder_input_details else None
        self.prefill_top: list[list[tuple[int, float]]] | None = (
            [[]] if params.decoder_input_details and params.top_n_tokens else None)

    @property
    def wants_prompt_logits(self) -> bool:
        return self.prefill_logprobs is not None and len(self.prefill_logprobs) < len(self.request.prompt_token_ids)


class Engine:
    """Continuous batching over one model's paged KV cache (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, num_blocks: int, block_size: int = 16,
                 max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, enable_prefix_caching: bool = True,
                 speculate: int = 0, proposer: NgramProposer | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.speculate = speculate         # draft tokens per step for requests that do not say (0: off)
        self.proposer = proposer or NgramProposer()
        self.spec_draft_tokens = self.spec_accepted_tokens = 0
        self.kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching=enable_prefix_caching)
        self.scheduler = Scheduler(self.kv, max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size)
        self.lora = AdapterRegistry(model)
        self.runner = ModelRunner(model, num_blocks, block_size, adapters=self.lora)
        self.sampler = Sampler()
        config = model.config
        self.max_positions: int = config.n_positions
        self.eos_ids = {i for i in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)) if i is not None}
        self.special_ids = set(tokenizer.all_special_ids)
        self.vocab = len(tokenizer)    # the model's vocabulary is padded to a multiple of 64: never sample padding
        self._states: dict[Hashable, _RequestState] = {}
        self.grammars = GrammarCompiler(tokenizer, self.vocab)
        self._compiling: dict[Hashable, tuple[futures.Future[GrammarMatcher], _RequestState]] = {}

    def add_request(self, request_id: Hashable, prompt: str | Sequence[int], params: SamplingParams) -> int | None:
        """Queue a request (prompt text or token ids); returns the seed it will sample with (None when greedy)."""
        ids = list(self.tokenizer.encode(prompt)) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise ValidationError("`inputs` cannot be empty")
        if len(ids) + params.max_new_tokens > self.max_positions:
            raise ValidationError(
                f"`inputs` tokens + `max_new_tokens` must be <= {self.max_positions}. "
                f"Given: {len(ids)} `inputs` tokens and {params.max_new_tokens} `max_new_tokens`")
        need = self.kv.blocks_needed(len(ids) + params.max_new_tokens)
        if need > self.kv.num_blocks:
            raise ValidationError(f"a sequence of {len(ids)} + {params.max_new_tokens} tokens needs {need} KV blocks "
                                  f"of {self.kv.block_size} tokens but the pool has num_blocks={self.kv.num_blocks}")
        adapter_key = None
        if params.adapter_id is not None:
            if params.adapter_id not in self.lora:
                raise ValidationError(f"adapter {params.adapter_id!r} is not loaded; {self.lora.known()}")
            adapter_key = self.lora.key(params.adapter_id)
        seed = (params.seed if params.seed is not None else secrets.randbits(64)) if params.sampling else None
        # prompt logprobs need logits at every prompt position: no cached prefix for them (vLLM does the same)
        request = Request(request_id, ids, adapter_id=adapter_key, use_prefix_cache=not params.decoder_input_details)
        speculate = self.speculate if params.speculate is None else params.speculate
        state = _RequestState(request, params, seed, self.tokenizer, self.eos_ids, speculate)
        if params.grammar is None:
            self.scheduler.add_request(request)
            self._states[request_id] = state
            return seed
        check_grammar(*params.grammar)     # a bad grammar is the caller's error now, not a failed request later
        state.speculate = 0                # a draft would need the matcher advanced and rolled back per position
        # a hostile grammar's first mask takes seconds: built on a worker thread (llguidance releases the GIL)
        # while the batch keeps stepping; the request joins the scheduler once its matcher is ready
        self._compiling[request_id] = (self.grammars.prepare(params.grammar, self.eos_ids), state)
        return seed

    def _admit_compiled(self) -> None:
        """Requests whose grammar is ready join the scheduler; when nothing else can run, wait a little for one."""
        if not self._compiling:
            return
        if not self.scheduler.has_unfinished():
            futures.wait([f for f, _ in self._compiling.values()], timeout=GRAMMAR_WAIT_S,
                         return_when=futures.FIRST_COMPLETED)
        for request_id, (future, state) in list(self._compiling.items()):
            if future.done():
                del self._compiling[request_id]
                state.grammar = future.result()
                self.scheduler.add_request(state.request)
                self._states[request_id] = state

    def abort(self, request_id: Hashable) -> bool:
        """Drop a request (client gone) and free its blocks; False if it is not queued."""
        if self._compiling.pop(request_id, None) is not None:
            return True
        self._states.pop(request_id, None)
        return self.scheduler.abort(request_id)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished() or bool(self._compiling)

    def add_adapter(self, name: str, path: str) -> dict:
        """Load a PEFT LoRA adapter; requests then name it in `SamplingParams.adapter_id`. Returns its description."""
        return self.lora.load(name, path).describe()

    def remove_adapter(self, name: str) -> dict:
        """Unload an adapter no queued or running request uses (`AdapterError` otherwise)."""
        key = self.lora.key(name)
        users = sum(1 for st in self._states.values() if st.request.adapter_id == key)
        if users:
            raise AdapterError(f"adapter {name!r} is in use by {users} request(s); unload it once they finish")
        return self.lora.unload(name).describe()

    def adapters(self) -> list[dict]:
        """The loaded adapters: name, path, rank, alpha, base model, target modules."""
        return self.lora.describe()

    def stats(self) -> EngineStats:
        s, kv = self.scheduler, self.kv
        return EngineStats(s.num_waiting + len(self._compiling), s.num_running, kv.num_blocks, kv.num_used_blocks,
                           kv.block_size,
                           s.num_preemptions, kv.num_cached_blocks, kv.stats.queries, kv.stats.hits,
                           self.spec_draft_tokens, self.spec_accepted_tokens)

    def step(self) -> EngineOutputs:
        """Schedule, run the model once, sample, update; one StepOutput per request that got a token."""
        self._admit_compiled()
        plan = self.scheduler.schedule()
        for request_id in plan.preempted_ids:
            state = self._states[request_id]
            if state.wants_prompt_logits:              # its prompt logprobs are recomputed from the start
                state.prefill_logprobs = [None]
                state.prefill_top = [[]] if state.prefill_top is not None else None
        outputs = self._execute(plan) if not plan.is_empty else []
        return EngineOutputs(outputs, len(plan.scheduled), plan.admitted_ids, plan.preempted_ids)

    def _execute(self, plan: SchedulerOutput) -> list[StepOutput]:
        states = [self._states[s.request_id] for s in plan.scheduled]
        logits = self.runner.execute([
            ScheduledSequence(st.request.token_ids, s.num_computed_tokens, s.num_new_tokens, s.block_ids,
                              all_logits=st.wants_prompt_logits or bool(s.spec_token_ids),
                              adapter_id=st.request.adapter_id, draft_token_ids=s.spec_token_ids)
            for s, st in zip(plan.scheduled, states, strict=True)])
        ready: list[int] = []
        for row, (s, st) in enumerate(zip(plan.scheduled, states, strict=True)):
            if logits.all[row] is not None and not s.spec_token_ids:
                _record_prefill_logprobs(st, logits.all[row], s.num_computed_tokens, s.num_new_tokens)
            if s.num_tokens_after - len(s.spec_token_ids) == st.request.num_tokens:   # caught up: next token
                ready.append(row)
        if not ready:
            self.scheduler.update(plan, {})
            return []
        picked = [states[r] for r in ready]
        drafts = [plan.scheduled[r].spec_token_ids for r in ready]
        rows = [SampleRow(st.params, Drafted(st.request.token_ids, draft[:i]) if i else st.request.token_ids,
                          st.request.num_output_tokens + i, st.seed)
                for st, draft in zip(picked, drafts, strict=True) for i in range(1 + len(draft))]
        if len(rows) == len(ready):          # no draft to verify: one row per request, its last logits
            scores = logits.last if len(ready) == len(states) else logits.last[ready]
        else:
            scores = torch.cat([logits.all[r] if plan.scheduled[r].spec_token_ids else logits.last[r:r + 1]
                                for r in ready])
        masks = None
        if any(st.grammar is not None for st in picked):    # constrained requests never carry a draft
            masks = [st.grammar.allowed() if st.grammar is not None else None for st in picked]
        result = self.sampler.sample(scores[:, :self.vocab], rows, masks)
        sampled: dict[Hashable, list[int]] = {}
        stops: dict[Hashable, Stop] = {}
        events: list[tuple[_RequestState, GeneratedToken, str, Stop | None]] = []
        first = 0
        for st, draft in zip(picked, drafts, strict=True):
            got = result.token_ids[first:first + 1 + len(draft)]
            kept = num_accepted(draft, got) + 1
            if draft:
                self.spec_draft_tokens += len(draft)
                self.spec_accepted_tokens += kept - 1
            rid = st.request.request_id
            sampled[rid] = []
            for j in range(first, first + kept):      # in order: a stop ends the request at that token
                token, delta, stop = self._detokenize(st, result.token_ids[j], result.logprobs[j],
                                                      result.top_tokens[j])
                sampled[rid].append(token.id)
                events.append((st, token, delta, stop))
                if st.grammar is not None:
                    st.grammar.advance(token.id)
                    if st.grammar.error is not None and stop is None:   # only EOS is left, even with ignore_eos
                        stop = Stop(FinishReason.EOS_TOKEN)
                        events[-1] = (st, token, delta, stop)
                if stop is not None:
                    stops[rid] = stop
                    break
            first += 1 + len(draft)
        self.scheduler.update(plan, sampled, stops.keys())
        outputs = []
        for st, token, delta, stop in events:
            rid = st.request.request_id
            completion = None
            if stop is not None:
                completion = self._complete(st, stop)
                del self._states[rid]
            outputs.append(StepOutput(rid, token, delta, completion))
        for st in picked:
            if st.speculate and st.request.request_id not in stops:
                self._propose(st)
        return outputs

    def _propose(self, st: _RequestState) -> None:
        """The draft the request verifies next step: at most what it may still generate, less the token after it."""
        request = st.request
        room = st.params.max_new_tokens - request.num_output_tokens - 1
        if room > 0:
            request.spec_token_ids = self.proposer.propose(request.token_ids, min(st.speculate, room))

    def _detokenize(self, st: _RequestState, token_id: int, logprob: float,
                    top: list[tuple[int, float]]) -> tuple[GeneratedToken, str, Stop | None]:
        """The token's text and what it adds to the output; the stop rule it triggered, if any."""
        special = token_id in self.special_ids
        piece = st.detok.add(token_id)
        token = GeneratedToken(token_id, piece, logprob, special, top)
        st.tokens.append(token)
        delta = "" if special else piece              # generated text skips special tokens, details keep them
        stop = st.stopper.check(token_id, delta)
        if stop is not None:
            if stop.reason is FinishReason.STOP_SEQUENCE:
                delta = delta[:stop.keep_chars]
            else:
                delta += st.detok.flush()
        st.text += delta
        return token, delta, stop

    def _complete(self, st: _RequestState, stop: Stop) -> Completion:
        request = st.request
        generated = request.output_token_ids
        return Completion(text=st.text, token_ids=generated, finish_reason=stop.reason,
                          generated_tokens=len(generated), seed=st.seed, tokens=st.tokens,
                          prompt_token_ids=request.prompt_token_ids, stop_sequence=stop.stop_sequence,
                          prefill_logprobs=st.prefill_logprobs, prefill_top_tokens=st.prefill_top,
                          error=st.grammar.error if st.grammar is not None else None)


def _record_prefill_logprobs(st: _RequestState, logits: torch.Tensor, start: int, n: int) -> None:
    """Logits at prompt position p score prompt token p + 1 (raw log-softmax, as TGI's prefill details)."""
    assert st.prefill_logprobs is not None
    prompt = st.request.prompt_token_ids
    targets = [p + 1 for p in range(start, start + n) if p + 1 < len(prompt)]
    if not targets or len(st.prefill_logprobs) != start + 1:
        return
    lp = torch.log_softmax(logits[:len(targets)].double(), dim=-1)
    ids = torch.tensor([prompt[t] for t in targets], device=lp.device)
    st.prefill_logprobs.extend(lp.gather(1, ids[:, None]).squeeze(1).tolist())
    if st.prefill_top is not None:             # the prompt's alternatives too (OpenAI's echo with logprobs)
        values, top_ids = lp.topk(min(st.params.top_n_tokens, lp.shape[1]), dim=-1)
        st.prefill_top.extend([list(zip(i, v, strict=True)) for i, v in zip(top_ids.tolist(), values.tolist(),
                                                                              strict=True)])


def generate(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str | Sequence[int]],
             params: SamplingParams | Sequence[SamplingParams] | None = None, *,
             max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
             block_size: int = 16, num_blocks: int | None = None, enable_prefix_caching: bool = True,
             progress: bool = False, adapters: Mapping[str, str | Path] | None = None) -> list[Completion]:
    """Complete every prompt (text, or token ids) with `model`; one `Completion` per prompt, in order.

    `params` is one `SamplingParams` for all prompts or one per prompt. `num_blocks` sizes the
    KV pool (default: room for every sequence at full length, capped at 1 GiB of K/V). The
    model runs in eval mode and is put back in its previous mode afterwards. `adapters` (name →
    PEFT LoRA directory) are loaded for the call; a prompt's `SamplingParams.adapter_id` names one.
    """
    if isinstance(params, SamplingParams) or params is None:
        params = [params or SamplingParams()] * len(prompts)
    if len(params) != len(prompts):
        raise ValidationError(f"got {len(params)} SamplingParams for {len(prompts)} prompts")
    if not prompts:
        return []
    ids = [list(tokenizer.encode(p)) if isinstance(p, str) else list(p) for p in prompts]
    if num_blocks is None:
        full = [math.ceil((len(i) + p.max_new_tokens) / block_size) for i, p in zip(ids, params, strict=True)]
        dtype = next(model.parameters()).dtype
        cap = DEFAULT_KV_CACHE_BYTES // kv_cache_bytes_per_block(model.config, block_size, dtype)
        num_blocks = max(min(sum(full), cap), max(full))
    engine = Engine(model, tokenizer, num_blocks=num_blocks, block_size=block_size,
                    max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                    enable_prefix_caching=enable_prefix_caching)
    try:
        for name, path in (adapters or {}).items():
            engine.add_adapter(name, str(path))
        return _run_all(engine, model, ids, params, progress)
    finally:
        engine.lora.layers.detach()       # the model is the base model again


def _run_all(engine: Engine, model: torch.nn.Module, ids: list[list[int]], params: Sequence[SamplingParams],
             progress: bool) -> list[Completion]:
    for i, (prompt_ids, p) in enumerate(zip(ids, params, strict=True)):
        try:
            engine.add_request(i, prompt_ids, p)
        except ValidationError as e:
            raise ValidationError(f"prompt {i}: {e}") from None
    done: dict[int, Completion] = {}
    was_training = model.training
    model.eval()                  # no dropout while generating, e.g. for samples in the middle of training
    try:
        with progress_bar(transient=True) as bar:
            task = bar.add_task("generating", total=len(ids), visible=progress)
            while engine.has_unfinished():
                for event in engine.step().outputs:
                    if event.completion is not None:
                        done[event.request_id] = event.completion
                        bar.advance(task)
    finally:
        model.train(was_training)
    return [done[i] for i in range(len(ids))]

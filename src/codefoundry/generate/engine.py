"""The step-wise engine and `generate()`, its synchronous batch wrapper.

`Engine.step()` is vLLM v1's loop in one call: schedule, execute, update. Scheduling has no
prefill/decode split: running sequences first, then waiting ones, each gets
`min(tokens it still lacks, budget left)` new tokens within `max_batch_tokens`. A long prompt
is thereby prefilled in chunks beside other sequences' decode steps; finished sequences free
their blocks at once and waiting ones take them (continuous batching). When the pool runs
out, the most recently admitted sequence is preempted: its blocks are freed and it is
recomputed later from its prompt and the tokens it already has (vLLM's recompute
preemption), so its output does not change.

    engine = Engine(model, tokenizer, num_blocks=512)
    engine.add_request("a", prompt_ids, SamplingParams(max_new_tokens=64))
    while engine.has_unfinished():
        for event in engine.step():          # one StepOutput per sequence that got a token
            event.token.text, event.text, event.completion

The engine is not thread-safe: one thread steps it, and adds or aborts between steps.
"""

from __future__ import annotations

import math
import secrets
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from codefoundry.console import progress_bar
from codefoundry.generate.detokenizer import IncrementalDetokenizer
from codefoundry.generate.kv_cache import KVCacheManager
from codefoundry.generate.params import FinishReason, SamplingParams, ValidationError
from codefoundry.generate.runner import ModelRunner, ScheduledSequence
from codefoundry.generate.sampler import Sampler, SampleRow
from codefoundry.generate.stop import StopChecker
from codefoundry.model import kv_cache_bytes_per_block

DEFAULT_MAX_BATCH_TOKENS = 2048        # tokens computed per step (prefill chunks + decodes)
DEFAULT_MAX_BATCH_SIZE = 256           # sequences per step
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


class _Sequence:
    """Engine-side state of one request."""

    def __init__(self, request_id: Hashable, prompt_ids: list[int], params: SamplingParams, seed: int | None,
                 tokenizer: Any, eos_ids: set[int]) -> None:
        self.id, self.params, self.seed = request_id, params, seed
        self.prompt_ids = prompt_ids
        self.token_ids = list(prompt_ids)
        self.num_computed = 0
        self.detok = IncrementalDetokenizer(tokenizer, prompt_ids, skip_special_tokens=False)
        self.stopper = StopChecker(params.max_new_tokens, params.stop, eos_ids, params.ignore_eos)
        self.tokens: list[GeneratedToken] = []
        self.text = ""
        self.prefill_logprobs: list[float | None] | None = [None] if params.decoder_input_details else None

    @property
    def num_generated(self) -> int:
        return len(self.token_ids) - len(self.prompt_ids)

    @property
    def num_missing(self) -> int:
        """Tokens not yet in the KV cache."""
        return len(self.token_ids) - self.num_computed

    @property
    def wants_prompt_logits(self) -> bool:
        return self.prefill_logprobs is not None and len(self.prefill_logprobs) < len(self.prompt_ids)


class Engine:
    """Continuous batching over one model's paged KV cache (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, num_blocks: int, block_size: int = 16,
                 max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> None:
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValidationError(f"max_batch_tokens and max_batch_size must be >= 1, "
                                  f"got {max_batch_tokens} and {max_batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_tokens, self.max_batch_size = max_batch_tokens, max_batch_size
        self.kv = KVCacheManager(num_blocks, block_size)
        self.runner = ModelRunner(model, num_blocks, block_size)
        self.sampler = Sampler()
        config = model.config
        self.max_positions: int = config.n_positions
        self.eos_ids = {i for i in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)) if i is not None}
        self.special_ids = set(tokenizer.all_special_ids)
        self.vocab = len(tokenizer)    # the model's vocabulary is padded to a multiple of 64: never sample padding
        self.waiting: deque[_Sequence] = deque()
        self.running: list[_Sequence] = []
        self.num_preemptions = 0

    def add_request(self, request_id: Hashable, prompt: str | Sequence[int], params: SamplingParams) -> int | None:
        """Queue a request (prompt text or token ids); returns the seed it will sample with (None when greedy)."""
        if any(s.id == request_id for s in (*self.waiting, *self.running)):
            raise ValueError(f"request id {request_id!r} is already queued")
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
        seed = (params.seed if params.seed is not None else secrets.randbits(64)) if params.sampling else None
        self.waiting.append(_Sequence(request_id, ids, params, seed, self.tokenizer, self.eos_ids))
        return seed

    def abort(self, request_id: Hashable) -> bool:
        """Drop a request (client gone) and free its blocks; False if it is not queued."""
        for queue in (self.waiting, self.running):
            for seq in queue:
                if seq.id == request_id:
                    queue.remove(seq)
                    self.kv.free(seq.id)
                    return True
        return False

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def _preempt(self, victim: _Sequence) -> None:
        self.kv.free(victim.id)
        victim.num_computed = 0
        if victim.wants_prompt_logits:          # its prompt logprobs are recomputed from the start
            victim.prefill_logprobs = [None]
        self.running.remove(victim)
        self.waiting.appendleft(victim)
        self.num_preemptions += 1

    def _schedule(self) -> list[tuple[_Sequence, int]]:
        """This step's `(sequence, new tokens)`, with their KV slots allocated."""
        budget = self.max_batch_tokens
        scheduled: list[tuple[_Sequence, int]] = []
        for seq in list(self.running):
            if seq not in self.running:          # preempted by an earlier sequence of this step
                continue
            n = min(seq.num_missing, budget)
            if n == 0:
                break
            while self.kv.allocate(seq.id, n) is None:
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
            if seq in self.running:
                scheduled.append((seq, n))
                budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.max_batch_size:
            seq = self.waiting[0]
            n = min(seq.num_missing, budget)
            if self.kv.allocate(seq.id, n) is None:
                break
            self.waiting.popleft()
            self.running.append(seq)
            scheduled.append((seq, n))
            budget -= n
        return scheduled

    def step(self) -> list[StepOutput]:
        """Schedule, run the model once, sample; one StepOutput per sequence that got a token."""
        scheduled = self._schedule()
        if not scheduled:
            return []
        out = self.runner.execute([
            ScheduledSequence(seq.token_ids, seq.num_computed, n, self.kv.block_table(seq.id),
                              all_logits=seq.wants_prompt_logits)
            for seq, n in scheduled])
        ready: list[int] = []
        for row, (seq, n) in enumerate(scheduled):
            if out.all[row] is not None:
                _record_prefill_logprobs(seq, out.all[row], n)
            seq.num_computed += n
            if seq.num_computed == len(seq.token_ids):   # caught up: its last logits pick the next token
                ready.append(row)
        if not ready:
            return []
        seqs = [scheduled[r][0] for r in ready]
        last = out.last if len(ready) == len(scheduled) else out.last[ready]
        result = self.sampler.sample(last[:, :self.vocab],
                                     [SampleRow(s.params, s.token_ids, s.num_generated, s.seed) for s in seqs])
        outputs = []
        for j, seq in enumerate(seqs):
            event = self._append_token(seq, result.token_ids[j], result.logprobs[j], result.top_tokens[j])
            if event.completion is not None:
                self.kv.free(seq.id)
                self.running.remove(seq)
            outputs.append(event)
        return outputs

    def _append_token(self, seq: _Sequence, token_id: int, logprob: float,
                      top: list[tuple[int, float]]) -> StepOutput:
        seq.token_ids.append(token_id)
        special = token_id in self.special_ids
        piece = seq.detok.add(token_id)
        token = GeneratedToken(token_id, piece, logprob, special, top)
        seq.tokens.append(token)
        delta = "" if special else piece              # generated text skips special tokens, details keep them
        stop = seq.stopper.check(token_id, delta)
        if stop is None:
            seq.text += delta
            return StepOutput(seq.id, token, delta, None)
        if stop.reason is FinishReason.STOP_SEQUENCE:
            delta = delta[:stop.keep_chars]
        else:
            delta += seq.detok.flush()
        seq.text += delta
        generated = seq.token_ids[len(seq.prompt_ids):]
        completion = Completion(text=seq.text, token_ids=generated, finish_reason=stop.reason,
                                generated_tokens=len(generated), seed=seq.seed, tokens=seq.tokens,
                                prompt_token_ids=seq.prompt_ids, stop_sequence=stop.stop_sequence,
                                prefill_logprobs=seq.prefill_logprobs)
        return StepOutput(seq.id, token, delta, completion)


def _record_prefill_logprobs(seq: _Sequence, logits: torch.Tensor, n: int) -> None:
    """Logits at prompt position p score prompt token p + 1 (raw log-softmax, as TGI's prefill details)."""
    assert seq.prefill_logprobs is not None
    start = seq.num_computed
    targets = [p + 1 for p in range(start, start + n) if p + 1 < len(seq.prompt_ids)]
    if not targets or len(seq.prefill_logprobs) != start + 1:
        return
    lp = torch.log_softmax(logits[:len(targets)].double(), dim=-1)
    ids = torch.tensor([seq.prompt_ids[t] for t in targets], device=lp.device)
    seq.prefill_logprobs.extend(lp.gather(1, ids[:, None]).squeeze(1).tolist())


def generate(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str | Sequence[int]],
             params: SamplingParams | Sequence[SamplingParams] | None = None, *,
             max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
             block_size: int = 16, num_blocks: int | None = None, progress: bool = False) -> list[Completion]:
    """Complete every prompt (text, or token ids) with `model`; one `Completion` per prompt, in order.

    `params` is one `SamplingParams` for all prompts or one per prompt. `num_blocks` sizes the
    KV pool (default: room for every sequence at full length, capped at 1 GiB of K/V). The
    model runs in eval mode and is put back in its previous mode afterwards.
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
                    max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size)
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
                for event in engine.step():
                    if event.completion is not None:
                        done[event.request_id] = event.completion
                        bar.advance(task)
    finally:
        model.train(was_training)
    return [done[i] for i in range(len(ids))]

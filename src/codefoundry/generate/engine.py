"""`generate()`: the synchronous batched loop over the KV manager, runner, sampler and stop checker.

Each step is vLLM v1's rule, without a prefill/decode split: running sequences first, then
waiting ones, each gets `min(tokens it still lacks, budget left)` new tokens within
`max_batch_tokens`. A long prompt is thereby prefilled in chunks beside other sequences'
decode steps; finished sequences free their blocks at once and waiting ones take them
(continuous batching). When the pool runs out, the most recently admitted sequence is
preempted: its blocks are freed and it is recomputed later from its prompt and the tokens
it already has (vLLM's recompute preemption), so its output does not change.
"""

from __future__ import annotations

import math
import secrets
from collections import deque
from collections.abc import Sequence
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
DEFAULT_KV_CACHE_BYTES = 1 << 30       # cap on the default pool: 1 GiB of K/V


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


class _Sequence:
    """Engine-side state of one prompt."""

    def __init__(self, index: int, prompt_ids: list[int], params: SamplingParams, seed: int | None,
                 tokenizer: Any, eos_ids: set[int]) -> None:
        self.index, self.params, self.seed = index, params, seed
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
    def wants_prompt_logits(self) -> bool:
        return self.prefill_logprobs is not None and len(self.prefill_logprobs) < len(self.prompt_ids)


def _encode(tokenizer: Any, prompt: str | Sequence[int]) -> list[int]:
    if isinstance(prompt, str):
        return list(tokenizer.encode(prompt))
    return [int(t) for t in prompt]


def generate(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str | Sequence[int]],
             params: SamplingParams | Sequence[SamplingParams] | None = None, *,
             max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
             block_size: int = 16, num_blocks: int | None = None, progress: bool = False) -> list[Completion]:
    """Complete every prompt (text, or token ids) with `model`; one `Completion` per prompt, in order.

    `params` is one `SamplingParams` for all prompts or one per prompt. `num_blocks` sizes the
    KV pool (default: room for every sequence at full length, capped at 1 GiB of K/V).
    """
    if isinstance(params, SamplingParams) or params is None:
        params = [params or SamplingParams()] * len(prompts)
    if len(params) != len(prompts):
        raise ValidationError(f"got {len(params)} SamplingParams for {len(prompts)} prompts")
    if max_batch_tokens < 1 or max_batch_size < 1:
        raise ValidationError(f"max_batch_tokens and max_batch_size must be >= 1, "
                              f"got {max_batch_tokens} and {max_batch_size}")
    if not prompts:
        return []
    config = model.config
    eos_ids = {i for i in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)) if i is not None}
    special_ids = set(tokenizer.all_special_ids)
    vocab = len(tokenizer)        # the model's vocabulary is padded to a multiple of 64: never sample the padding
    seqs: list[_Sequence] = []
    for i, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
        ids = _encode(tokenizer, prompt)
        if not ids:
            raise ValidationError(f"prompt {i}: `inputs` cannot be empty")
        if len(ids) + p.max_new_tokens > config.n_positions:
            raise ValidationError(
                f"prompt {i}: `inputs` tokens + `max_new_tokens` must be <= {config.n_positions}. "
                f"Given: {len(ids)} `inputs` tokens and {p.max_new_tokens} `max_new_tokens`")
        seed = (p.seed if p.seed is not None else secrets.randbits(64)) if p.sampling else None
        seqs.append(_Sequence(i, ids, p, seed, tokenizer, eos_ids))

    full = [math.ceil((len(s.prompt_ids) + s.params.max_new_tokens) / block_size) for s in seqs]
    if num_blocks is None:
        cap = DEFAULT_KV_CACHE_BYTES // kv_cache_bytes_per_block(config, block_size, next(model.parameters()).dtype)
        num_blocks = max(min(sum(full), cap), max(full, default=1))
    if full and max(full) > num_blocks:
        raise ValidationError(f"a sequence needs {max(full)} KV blocks of {block_size} tokens "
                              f"but the pool has num_blocks={num_blocks}")

    was_training = model.training
    model.eval()                  # no dropout while generating, e.g. for samples in the middle of training
    try:
        done = _run(seqs, ModelRunner(model, num_blocks, block_size), KVCacheManager(num_blocks, block_size),
                    max_batch_tokens, max_batch_size, vocab, special_ids, progress)
    finally:
        model.train(was_training)
    return [done[i] for i in range(len(seqs))]


def _run(seqs: list[_Sequence], runner: ModelRunner, kv: KVCacheManager, max_batch_tokens: int,
         max_batch_size: int, vocab: int, special_ids: set[int], progress: bool) -> dict[int, Completion]:
    """Step until every sequence has finished; completions by sequence index."""
    sampler = Sampler()
    waiting: deque[_Sequence] = deque(seqs)
    running: list[_Sequence] = []
    done: dict[int, Completion] = {}

    def preempt(victim: _Sequence) -> None:
        kv.free(victim.index)
        victim.num_computed = 0
        if victim.wants_prompt_logits:          # its prompt logprobs are recomputed from the start
            victim.prefill_logprobs = [None]
        running.remove(victim)
        waiting.appendleft(victim)

    with progress_bar(transient=True) as bar:
        task = bar.add_task("generating", total=len(seqs), visible=progress)
        while waiting or running:
            budget = max_batch_tokens
            scheduled: list[tuple[_Sequence, int]] = []
            for seq in list(running):
                if seq not in running:           # preempted by an earlier sequence of this step
                    continue
                n = min(len(seq.token_ids) - seq.num_computed, budget)
                if n == 0:
                    break
                while kv.allocate(seq.index, n) is None:
                    victim = running[-1]
                    preempt(victim)
                    if victim is seq:
                        break
                if seq in running:
                    scheduled.append((seq, n))
                    budget -= n
            while waiting and budget > 0 and len(running) < max_batch_size:
                seq = waiting[0]
                n = min(len(seq.token_ids) - seq.num_computed, budget)
                if kv.allocate(seq.index, n) is None:
                    break
                waiting.popleft()
                running.append(seq)
                scheduled.append((seq, n))
                budget -= n
            if not scheduled:
                raise RuntimeError("no sequence fits in the KV pool")   # unreachable: checked above

            out = runner.execute([
                ScheduledSequence(seq.token_ids, seq.num_computed, n, kv.block_table(seq.index),
                                  all_logits=seq.wants_prompt_logits)
                for seq, n in scheduled])
            ready: list[int] = []
            for row, (seq, n) in enumerate(scheduled):
                if out.all[row] is not None:
                    _record_prefill_logprobs(seq, out.all[row], n)
                seq.num_computed += n
                if seq.num_computed == len(seq.token_ids):
                    ready.append(row)
            if not ready:
                continue
            rows = [SampleRow(scheduled[r][0].params, scheduled[r][0].token_ids, scheduled[r][0].num_generated,
                              scheduled[r][0].seed) for r in ready]
            result = sampler.sample(out.last[ready, :vocab], rows)
            for j, r in enumerate(ready):
                seq = scheduled[r][0]
                completion = _append_token(seq, result.token_ids[j], result.logprobs[j], result.top_tokens[j],
                                           special_ids)
                if completion is not None:
                    kv.free(seq.index)
                    running.remove(seq)
                    done[seq.index] = completion
                    bar.advance(task)
    return done


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


def _append_token(seq: _Sequence, token_id: int, logprob: float, top: list[tuple[int, float]],
                  special_ids: set[int]) -> Completion | None:
    """Add a sampled token to `seq`; return its Completion when it has finished."""
    seq.token_ids.append(token_id)
    special = token_id in special_ids
    piece = seq.detok.add(token_id)
    seq.tokens.append(GeneratedToken(token_id, piece, logprob, special, top))
    delta = "" if special else piece              # generated_text skips special tokens, details keep them
    stop = seq.stopper.check(token_id, delta)
    if stop is None:
        seq.text += delta
        return None
    if stop.reason is FinishReason.STOP_SEQUENCE:
        seq.text += delta[:stop.keep_chars]
    else:
        seq.text += delta + seq.detok.flush()
    generated = seq.token_ids[len(seq.prompt_ids):]
    return Completion(text=seq.text, token_ids=generated, finish_reason=stop.reason,
                      generated_tokens=len(generated), seed=seq.seed, tokens=seq.tokens,
                      prompt_token_ids=seq.prompt_ids, stop_sequence=stop.stop_sequence,
                      prefill_logprobs=seq.prefill_logprobs)

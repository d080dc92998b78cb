"""codefoundry.generate: the one generation path (paged KV cache, sampler, stop rules, detokenizer).

    from codefoundry.generate import generate, SamplingParams
    [c] = generate(model, tokenizer, ["def fib(n):"], SamplingParams(max_new_tokens=64, stop=["\\ndef "]))
    c.text, c.finish_reason, c.logprobs

`Engine` is the step-wise form (add_request / abort / step → `EngineOutputs`, a StepOutput
per token) that a server loop drives; `generate()` adds every prompt and steps until all are
done. The layers are vLLM v1's, with plain data between them: `Scheduler` (queues, token
budget, chunked prefill, preemption → `SchedulerOutput`) over `KVCacheManager` (block ids,
None when full; full blocks hashed and shared across requests: prefix caching) → `ModelRunner`
(`ScheduledSequence`s → logits via `model.forward_paged`)
→ `Sampler` (`SampleRow`s → tokens, logprobs) → `IncrementalDetokenizer` + `StopChecker` per
request → `Scheduler.update` (tokens appended, finished requests freed).
"""

from codefoundry.generate.detokenizer import IncrementalDetokenizer
from codefoundry.generate.engine import (
    Completion,
    Engine,
    EngineOutputs,
    EngineStats,
    GeneratedToken,
    StepOutput,
    generate,
)
from codefoundry.generate.kv_cache import KVCacheManager
from codefoundry.generate.params import FinishReason, SamplingParams, ValidationError
from codefoundry.generate.prefix_cache import BlockPool, CachedPrefix, PrefixCacheStats, hash_block
from codefoundry.generate.runner import ModelRunner, ScheduledSequence, StepLogits
from codefoundry.generate.sampler import Sampler, SampleResult, SampleRow, uniform
from codefoundry.generate.scheduler import BlockAllocator, Request, ScheduledRequest, Scheduler, SchedulerOutput
from codefoundry.generate.stop import Stop, StopChecker
from codefoundry.generate.tensor_parallel import check_tp_serving

__all__ = [
    "BlockAllocator",
    "BlockPool",
    "CachedPrefix",
    "Completion",
    "Engine",
    "EngineOutputs",
    "EngineStats",
    "FinishReason",
    "GeneratedToken",
    "IncrementalDetokenizer",
    "KVCacheManager",
    "ModelRunner",
    "PrefixCacheStats",
    "Request",
    "SampleResult",
    "SampleRow",
    "Sampler",
    "SamplingParams",
    "ScheduledRequest",
    "ScheduledSequence",
    "Scheduler",
    "SchedulerOutput",
    "StepLogits",
    "StepOutput",
    "Stop",
    "StopChecker",
    "ValidationError",
    "check_tp_serving",
    "generate",
    "hash_block",
    "uniform",
]

"""Building a server's engine from its `ServeConfig`: load the model, size the KV pool, warm up (TGI's order).

`build_engine(cfg)` runs wherever the engine lives (the engine-core process by default, or the
server's own process) and returns the engine with an `EngineInfo` the server derives its limits
from. Warmup follows TGI: one forward at the full prefill budget first (a too-large budget fails
here, not under load), then the KV pool takes `memory_fraction` of the memory still free (on
CPU: of available RAM, capped by `cpu_kv_cache_bytes`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import msgspec
import torch

from codefoundry.errors import UserError
from codefoundry.generate import Engine, SamplingParams
from codefoundry.serve.config import ServeConfig

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # ServeConfig.dtype's values


@dataclass(frozen=True)
class EngineInfo:
    """What the server needs to know about the engine it did not build itself (plain values: it crosses processes)."""

    num_blocks: int
    block_size: int
    n_positions: int
    dtype: str                         # "float32", …
    device_type: str                   # "cpu" | "cuda"
    special_ids: list[int]
    prefill_tokens: int                # the warmup's prefill
    warmup_seconds: float
    adapters: list[dict[str, Any]]     # the LoRA adapters loaded at start (`Engine.adapters()`)
    quantize: str | None = None        # weight-only quantization served ("int8", "int4"), None = float weights

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1 << 30


def size_kv_pool(cfg: ServeConfig, model_config: Any, dtype: torch.dtype, device: torch.device) -> int:
    """Blocks in the KV pool: `--max-batch-total-tokens` if given, else what the free memory holds."""
    from codefoundry.model import kv_cache_bytes_per_block

    if cfg.max_batch_total_tokens is not None:
        return -(-cfg.max_batch_total_tokens // cfg.block_size)
    per_block = kv_cache_bytes_per_block(model_config, cfg.block_size, dtype)
    budget = int(_free_memory_bytes(device) * cfg.memory_fraction)
    if device.type != "cuda":
        budget = min(budget, cfg.cpu_kv_cache_bytes)
    return max(budget // per_block, 1)


def warmup(engine: Engine, num_tokens: int) -> float:
    """Run one maximal prefill of `num_tokens` tokens (TGI's warmup); returns its seconds."""
    vocab = len(engine.tokenizer)
    ids = [(i * 7919) % vocab for i in range(num_tokens)]
    start = time.perf_counter()
    engine.add_request("warmup", ids, SamplingParams(max_new_tokens=1, ignore_eos=True))
    while engine.has_unfinished():
        engine.step()
    return time.perf_counter() - start


def build_engine(cfg: ServeConfig) -> tuple[Engine, EngineInfo]:
    """Load `cfg.model` (a model directory or a .gguf file), warm up, size the pool; the ready engine and its info."""
    from codefoundry.model import load_model, resolve_model_path
    from codefoundry.tokenizer import load_tokenizer

    if cfg.model is None:
        raise UserError("no model given", "pass --model DIR (a model/ artifact in HF format)")
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[cfg.dtype] if cfg.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    quantize = cfg.served_quantize
    tp = None
    if cfg.tp > 1:                                   # the other ranks load the model while this one does
        from codefoundry.generate.tensor_parallel import launch

        tp = launch(cfg.model, cfg.tp, dtype, device, quantize, bool(cfg.adapters) or cfg.adapter_root is not None,
                    cfg.file_int4)
    # under --tp each rank quantizes its own shard of the float model
    model = load_model(cfg.model, dtype=dtype, device=device, quantize=None if tp else quantize)
    if tp is not None:                               # sharded over cfg.tp processes; this one runs the engine
        model = tp.shard(model)
    tokenizer = load_tokenizer(resolve_model_path(cfg.model))
    n_positions = model.config.n_positions

    # 1. a maximal prefill on a pool just big enough for it (TGI: fail early on a too-large prefill budget)
    prefill = min(cfg.max_batch_prefill_tokens, n_positions - 1, cfg.max_input_tokens or n_positions)
    probe = Engine(model, tokenizer, num_blocks=-(-(prefill + 1) // cfg.block_size), block_size=cfg.block_size,
                   max_batch_tokens=cfg.max_batch_prefill_tokens)
    try:
        warmup(probe, prefill)
    except torch.OutOfMemoryError:
        raise UserError(f"Not enough memory to handle {prefill} prefill tokens. "
                        "You need to decrease `--max-batch-prefill-tokens`") from None
    del probe
    if device.type == "cuda":
        torch.cuda.empty_cache()
    # 2. the pool from what is left
    num_blocks = size_kv_pool(cfg, model.config, dtype, device)
    engine = Engine(model, tokenizer, num_blocks=num_blocks, block_size=cfg.block_size,
                    max_batch_tokens=cfg.max_batch_prefill_tokens,
                    max_batch_size=max(cfg.max_concurrent_requests * cfg.max_client_batch_size, 1),
                    enable_prefix_caching=cfg.enable_prefix_caching, speculate=cfg.speculate)
    # a pool of --max-batch-total-tokens T holds a prompt of T - 1 tokens and its one new token
    seconds = warmup(engine, min(prefill, num_blocks * cfg.block_size - 1))
    for name, path in cfg.adapters.items():
        if name == cfg.model_id:
            raise UserError(f"--adapter {name}=…: the name is the base model's", "pick another adapter name")
        engine.add_adapter(name, str(path))
    return engine, EngineInfo(num_blocks=num_blocks, block_size=cfg.block_size, n_positions=n_positions,
                              dtype=str(dtype).removeprefix("torch."), device_type=device.type,
                              special_ids=sorted(engine.special_ids), prefill_tokens=prefill, warmup_seconds=seconds,
                              adapters=msgspec.to_builtins(engine.adapters()), quantize=quantize)


def build_engine_for_process(settings: dict[str, Any]) -> tuple[Engine, dict[str, Any]]:
    """`build_engine` as the engine-core process runs it, from `ServeConfig.model_dump(mode="json")`: its info as
    a plain dict (what crosses the boundary)."""
    cfg = ServeConfig.model_validate(settings)
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))
    engine, info = build_engine(cfg)
    return engine, info.to_dict()

"""Tensor-parallel serving: one model sharded over N processes, the engine on rank 0 (TGI's sharded mode).

Rank 0 is wherever the engine lives (the engine-core process, or the server's own process): it
keeps the scheduler, the KV-cache manager, the sampler and the runner, and starts ranks 1…N-1
as fresh interpreters (`worker_main`). Every rank loads the model directory and keeps its
shard of each block, Megatron's layout (`tp_shards`: GPTBigCode, Llama, StarCoder2; float, int8,
int4): query heads and the MLP's width split, the K/V heads each rank's query heads read kept in
that rank's own KV cache, two all-reduces per block. Each step, rank 0's runner calls
`TensorParallelModel.forward_paged`, which broadcasts the step's inputs (token ids, positions,
slots, block tables, logits rows) to the workers; all ranks then run the same sharded forward
(two all-reduces per block) and rank 0 samples from its logits. Workers exit when rank 0 is gone
(the engine core ends with `os._exit`: their next broadcast fails).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from codefoundry.errors import UserError
from codefoundry.generate.tp_shards import attach_gguf_int4, check_shardable, local_kv_heads, shard_model
from codefoundry.model import PagedAttention, allocate_kv_cache

log = logging.getLogger(__name__)
STEP = 1
HEADER = 8                                   # [command, N, S, table width, L, cache generation, blocks, block size]
JOIN_TIMEOUT = timedelta(seconds=300)        # workers load the model before they join


class ShardConfig:
    """The model's config as rank `rank`'s KV cache sees it: only the K/V heads that rank keeps."""

    def __init__(self, config: Any, world: int, rank: int) -> None:
        self._config = config
        self.num_kv_heads = local_kv_heads(config, world, rank)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name)


# ---- one step on the wire ----------------------------------------------------------------------------

def _send(fields: list[torch.Tensor], counts: tuple[int, ...], device: torch.device) -> None:
    """`device`: where the backend takes tensors (nccl: the GPU, gloo: the CPU)."""
    dist.broadcast(torch.tensor([STEP, *counts], dtype=torch.long, device=device), src=0)
    dist.broadcast(torch.cat([f.reshape(-1).to(device, torch.long) for f in fields]), src=0)


def _receive(device: torch.device) -> tuple[int, list[int], torch.Tensor]:
    header = torch.empty(HEADER, dtype=torch.long, device=device)
    dist.broadcast(header, src=0)
    command, *counts = header.tolist()
    N, S, width, L = counts[:4]
    payload = torch.empty(3 * N + 2 * S + S * width + L, dtype=torch.long, device=device)
    dist.broadcast(payload, src=0)
    return command, counts, payload


class TensorParallelModel(nn.Module):
    """Rank 0's shard; its `forward_paged` first sends the step to the other ranks (the runner calls it as usual)."""

    def __init__(self, shard: nn.Module, world: int, workers: list[subprocess.Popen]) -> None:
        super().__init__()
        self.shard, self.world, self.workers = shard, world, workers
        self.config = ShardConfig(shard.config, world, 0)
        self._caches: list[torch.Tensor] | None = None
        self._generation = 0

    def forward_paged(self, input_ids: torch.Tensor, positions: torch.Tensor, attn: PagedAttention,
                      kv_caches: list[torch.Tensor]) -> torch.Tensor:
        if kv_caches is not self._caches:     # a new runner's pool (warmup's probe, then the engine's)
            self._caches, self._generation = kv_caches, self._generation + 1
        S, width = attn.block_tables.shape
        counts = (len(input_ids), S, width, len(attn.logits_indices), self._generation, kv_caches[0].shape[0],
                  attn.block_size)
        _send([input_ids, positions, attn.slot_mapping, torch.tensor(attn.query_lens),
               torch.tensor(attn.context_lens), attn.block_tables, attn.logits_indices], counts, input_ids.device)
        return self.shard.forward_paged(input_ids, positions, attn, kv_caches)


# ---- starting the ranks --------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank: int, world: int, port: int, device: torch.device) -> None:
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world, timeout=JOIN_TIMEOUT)


class Launch:
    """Worker ranks started (they load the model while rank 0 does); `shard` joins them and shards rank 0's copy."""

    def __init__(self, model_dir: Path, world: int, dtype: torch.dtype, device: torch.device,
                 quantize: str | None = None) -> None:
        self.model_dir, self.world, self.device, self.quantize = model_dir, world, device, quantize
        self.port = _free_port()
        self.workers: list[subprocess.Popen] = []
        for rank in range(1, world):
            popen = subprocess.Popen([sys.executable, "-c", f"import {__name__} as m; m.worker_main()"],
                                     stdin=subprocess.PIPE, close_fds=True)
            assert popen.stdin is not None
            # JSON, not pickle: nothing read from a pipe may run code
            popen.stdin.write(json.dumps([str(model_dir), str(dtype).removeprefix("torch."), device.type, rank, world,
                                          self.port, quantize]).encode())
            popen.stdin.close()
            self.workers.append(popen)

    def kill(self) -> None:
        for w in self.workers:
            w.kill()

    def shard(self, model: nn.Module) -> TensorParallelModel:
        """Join the workers as rank 0 and keep rank 0's shard of `model`: the model the engine runs."""
        try:
            _init(0, self.world, self.port, self.device)
        except Exception as e:
            self.kill()
            raise UserError(f"--tp {self.world}: the tensor-parallel workers did not join "
                            f"({type(e).__name__}: {e})") from None
        return TensorParallelModel(_shard(model, self.model_dir, 0, self.world, self.quantize), self.world,
                                   self.workers)


def _shard(model: nn.Module, model_path: Path, rank: int, world: int, quantize: str | None) -> nn.Module:
    """Rank `rank`'s shard of the float `model` read from `model_path`, quantized as `load_model` would."""
    if quantize == "int4" and Path(model_path).suffix.lower() == ".gguf" and not Path(model_path).is_dir():
        attach_gguf_int4(model, model_path)          # the file's own 4-bit values, as at --tp 1
    return shard_model(model, rank, world, quantize)


def check_tp_serving(model_dir: Path, world: int, quantize: str | None = None, adapters: bool = False,
                     file_int4: bool = False) -> None:
    """Raise `UserError` (one line, with a hint) for what `--tp world` cannot serve; cheap: reads only the config.
    `file_int4`: int4 is the model file's own (see `check_shardable`)."""
    if adapters:
        raise UserError(f"--tp {world} with LoRA adapters (--adapter, --adapter-root) is not supported: the "
                        "adapters' A/B matrices are not sharded",
                        hint="merge the adapter (codefoundry finetune merge) and serve the merged model")
    from codefoundry.model import load_config

    check_shardable(load_config(model_dir), world, quantize, file_int4)


def launch(model_dir: Path, world: int, dtype: torch.dtype, device: torch.device, quantize: str | None = None,
           adapters: bool = False, file_int4: bool = False) -> Launch:
    """Refuse what tensor-parallel serving cannot do, then start ranks 1…world-1 on `model_dir`.

    The caller loads its own copy of the model unquantized: `Launch.shard` quantizes each shard.
    """
    check_tp_serving(model_dir, world, quantize, adapters, file_int4)
    return Launch(model_dir, world, dtype, device, quantize)


def worker_main() -> None:
    """A worker rank's entry point (its arguments as JSON on stdin): load, shard, then run every step rank 0 sends."""
    from codefoundry.model import load_model

    model_dir, dtype_name, device_type, rank, world, port, quantize = json.loads(sys.stdin.buffer.read())
    logging.basicConfig(level=logging.WARNING, format=f"tp-rank-{rank}: %(levelname)s %(name)s: %(message)s")
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model = load_model(model_dir, dtype=getattr(torch, dtype_name), device=device)
    _init(rank, world, port, device)
    code = 0
    try:
        _shard(model, Path(model_dir), rank, world, quantize)
        _serve_steps(model, ShardConfig(model.config, world, rank), device)
    except (RuntimeError, dist.DistBackendError) as e:         # rank 0 is gone (its process exits without a word)
        log.info("rank 0 stopped answering (%s): this worker stops", type(e).__name__)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)                                              # no teardown of the model and the cache needed


@torch.inference_mode()
def _serve_steps(model: nn.Module, cache_shape: ShardConfig, device: torch.device) -> None:
    caches: list[torch.Tensor] = []
    generation = 0
    dtype = next(model.parameters()).dtype
    while True:
        command, counts, payload = _receive(device)
        if command != STEP:
            raise RuntimeError(f"unknown command {command} from rank 0")
        N, S, width, L, gen, num_blocks, block_size = counts
        if gen != generation:
            caches, generation = [], gen
            caches = allocate_kv_cache(cache_shape, num_blocks, block_size, dtype=dtype, device=device)
        parts = payload.to(device).split([N, N, N, S, S, S * width, L])
        ids, positions, slots, query_lens, context_lens, tables, logits_indices = parts
        attn = PagedAttention(query_lens=query_lens.tolist(), context_lens=context_lens.tolist(),
                              block_tables=tables.view(S, width), slot_mapping=slots, logits_indices=logits_indices,
                              block_size=block_size)
        model.forward_paged(ids, positions, attn, caches)

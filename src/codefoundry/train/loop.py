"""The pretraining loop (nanoGPT's, with Megatron/StarCoder's settings), on one process or under torchrun.

    for step in range(start, total):
        lr ← cosine(step)                            # schedule.lr_at
        for micro in range(accum):                   # gradient accumulation to batch_tokens
            x, y ← samples[step·G + rank·G/W + micro·B …]   (FIM, deterministic per index)
            loss ← model(x, labels=y) / accum        # bf16 autocast on GPU
            loss.backward()                          # DDP syncs on the last micro-step only
        clip grad norm; AdamW step; log; eval; checkpoint

Everything a step depends on is a function of the step number and the checkpoint (model,
optimizer, RNG, cosine horizon), so a resumed run repeats the uninterrupted one's losses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

from codefoundry.console import resume_hint
from codefoundry.errors import ArtifactError, UserError
from codefoundry.train import checkpoint as ckpt
from codefoundry.train import pipeline_parallel, tensor_parallel
from codefoundry.train.config import TrainConfig
from codefoundry.train.distributed import Dist, average_gradients, make_layout, setup, shard_fsdp
from codefoundry.train.live import LiveView
from codefoundry.train.metrics import MetricsLog, device_peak_flops, flops_per_token, plot_loss
from codefoundry.train.pack import read_index
from codefoundry.train.samples import Batcher, PackedSamples
from codefoundry.train.schedule import lr_at

log = logging.getLogger(__name__)
VAL_SEED_OFFSET = 1_000_003  # validation samples draw FIM from another stream than training's


@dataclass
class Plan:
    """The run's shape, resolved from the config, the data and the number of processes."""

    seq_len: int
    global_seqs: int          # G: sequences per optimizer step, all processes
    accum: int                # micro-steps per optimizer step on each process
    total_steps: int | None   # None: until max_time
    decay_steps: int | None   # None: estimated after the first step (max_time runs)
    warmup_steps: int | None

    @property
    def batch_tokens(self) -> int:
        return self.global_seqs * self.seq_len


@dataclass
class RunResult:
    out: Path
    steps: int
    tokens: int
    losses: list[float] = field(default_factory=list)
    val_loss: float | None = None


def make_plan(config: TrainConfig, seq_len: int, world: int, train_chunks: int) -> Plan:
    per_micro = config.micro_batch_size * world
    global_seqs = per_micro
    if config.batch_tokens is not None:
        if config.batch_tokens % (seq_len * per_micro):
            raise UserError(f"batch_tokens {config.batch_tokens} is not a multiple of seq_len × micro_batch_size "
                            f"× processes = {seq_len} × {config.micro_batch_size} × {world} = {seq_len * per_micro}")
        global_seqs = config.batch_tokens // seq_len
    total = config.max_steps
    if total is None and config.max_tokens is not None:
        total = math.ceil(config.max_tokens / (global_seqs * seq_len))
    if total is None and config.max_time is None:
        total = max(1, math.ceil(train_chunks / global_seqs))  # one epoch
    decay = config.decay_steps or total
    return Plan(seq_len, global_seqs, global_seqs // per_micro, total, decay, _warmup(config, decay))


def _warmup(config: TrainConfig, decay: int | None) -> int | None:
    if config.warmup_steps is not None:
        return config.warmup_steps
    return None if decay is None else min(2000, max(1, decay // 10))  # StarCoder's 2,000, ≤ a tenth of the run


def build_model(config: TrainConfig, vocab_size: int) -> tuple[nn.Module, Any, int]:
    """A freshly initialized model of the preset (same weights on every process: seeded)."""
    from codefoundry.model import GPTBigCodeForCausalLM, preset

    model_config = preset(config.preset, vocab_size=vocab_size)
    if config.model_overrides:
        unknown = sorted(set(config.model_overrides) - {f.name for f in dataclasses.fields(model_config)})
        if unknown or "vocab_size" in config.model_overrides:
            raise UserError(f"model_overrides: {', '.join(unknown) or 'vocab_size'} cannot be set",
                            hint="use GPTBigCodeConfig field names; the vocabulary comes from the tokenizer")
        model_config = model_config.replace(**config.model_overrides)
    if config.dropout is not None:
        model_config.attn_pdrop = model_config.resid_pdrop = model_config.embd_pdrop = config.dropout
    seq_len = config.seq_len or model_config.n_positions
    if seq_len > model_config.n_positions:
        raise UserError(f"seq_len {seq_len} is longer than the {config.preset} preset's {model_config.n_positions} "
                        "positions", hint="use a smaller --seq-len or the `long` preset (8,192)")
    torch.manual_seed(config.seed)
    return GPTBigCodeForCausalLM(model_config), model_config, seq_len


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a model or of a pipeline stage."""
    return list(model.h.values() if isinstance(model, pipeline_parallel.Stage) else model.transformer.h)


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block in backward (non-reentrant `torch.utils.checkpoint`); names unchanged."""
    for block in _blocks(model):
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and embeddings (≥ 2 dims), not biases or LayerNorms (nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> tuple[dict, dict]:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return model.state_dict(), optimizer.state_dict()


def _load_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])


def train_loop(
    config: TrainConfig,
    tokens_dir: Path,
    tokenizer,
    out: Path,
    resume: bool = False,
    d: Dist | None = None,
) -> tuple[nn.Module, Any, RunResult]:
    """Train a new model of `config.preset` on `tokens_dir`; returns (model, model config, result)."""
    d = d or setup()
    index = read_index(tokens_dir)
    if index["vocab_size"] != len(tokenizer):
        raise ArtifactError(f"tokens {tokens_dir} were packed with a {index['vocab_size']}-token vocabulary, but "
                            f"the tokenizer has {len(tokenizer)}", hint="pack again with this tokenizer")
    raw, model_config, seq_len = build_model(config, len(tokenizer))
    train_samples = PackedSamples(tokens_dir, "train", seq_len, config.seed)
    val_samples = PackedSamples(tokens_dir, "validation", seq_len, config.seed, shuffle=False)
    if not len(train_samples):
        train_samples.context(0)  # raises the "too little data" error
    tp, pp = config.tp > 1, config.pp > 1
    layout = make_layout(d, config.tp, config.pp)
    # under --tp and --pp the processes of one replica see the same batch: data parallelism is over replicas
    data_rank, data_world = (layout.dp_rank, layout.dp) if layout else (d.rank, d.world)
    plan = make_plan(config, seq_len, data_world, len(train_samples))
    batcher = Batcher(train_samples, tokenizer, config.seed, config.fim_rate, config.fim_spm_rate)
    val_batcher = Batcher(val_samples, tokenizer, config.seed + VAL_SEED_OFFSET, config.fim_rate,
                          config.fim_spm_rate)

    raw.to(d.device)
    n_params = sum(p.numel() for p in raw.parameters())
    if config.activation_checkpointing:
        enable_activation_checkpointing(raw)
    fsdp = config.distributed == "fsdp"
    order = tensor_parallel.plain_param_order(raw)
    if fsdp and layout is not None and layout.dp == 1:
        raise UserError(f"--distributed fsdp shards over the data-parallel replicas, and this run has one "
                        f"({d.world} processes = {config.pp} pipeline stages × {config.tp} tensor-parallel shards)",
                        hint="run more processes (a multiple of --tp × --pp), or leave out --distributed fsdp")
    # torchtitan's order: tensor parallelism inside, FSDP2 over the dp dimension, pipeline stages each sharded
    shard = (lambda m: shard_fsdp(m, d, _blocks(m), layout.mesh["dp"], layout.mesh["dp", "tp"] if tp else None,
                                  reshard_after_forward=not pp)) if fsdp and layout is not None else None
    if pp:
        pp_group = layout.group("pp")
        model, schedule = pipeline_parallel.build(raw, config.pp, layout.stage_rank, plan.accum,
                                                  config.micro_batch_size, seq_len, d.device, pp_group,
                                                  layout.mesh["tp"] if tp else None, shard)
        eval_schedule = pipeline_parallel.eval_schedule(model, config.pp, layout.stage_rank, config.eval_batches,
                                                        config.micro_batch_size, seq_len, d.device, pp_group)
    elif tp:
        model: nn.Module = tensor_parallel.parallelize(raw, layout.mesh["tp"])
        if shard is not None:
            shard(model)
    elif fsdp:
        model = shard_fsdp(raw, d, _blocks(raw))
    elif d.world > 1:
        model = DDP(raw, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    else:
        model = raw
    if config.compile:
        model = torch.compile(model)
    cuda = d.device.type == "cuda"
    # Fused AdamW (one kernel over all parameters) on GPU and CPU: on CPU it is ~4x faster than the
    # per-tensor loop torch picks by default (6 vs 21-31 ms a step at the small preset, bench/RESULTS.md);
    # transformers' Trainer defaults to it too. FSDP2's sharded DTensors keep torch's default.
    optimizer = torch.optim.AdamW(param_groups(model if pp else raw, config.weight_decay), lr=config.lr,
                                  betas=(config.beta1, config.beta2), eps=config.eps,
                                  fused=None if fsdp or tp else d.device.type in ("cuda", "cpu"))
    bf16 = config.precision == "bf16" or (config.precision == "auto" and cuda)
    autocast = (torch.autocast(d.device.type, dtype=torch.bfloat16) if bf16 and not fsdp
                else contextlib.nullcontext())

    start_step, tokens_seen, elapsed_before = 0, 0, 0.0
    state = ckpt.load_checkpoint(out) if resume else None
    if resume and state is None and d.main:
        log.info("no checkpoint in %s: starting from step 0", ckpt.checkpoint_dir(out))
    if state is not None:
        if state["seq_len"] != seq_len or state["global_seqs"] != plan.global_seqs:
            raise UserError(f"the checkpoint in {out} was made with seq_len {state['seq_len']} and "
                            f"{state['global_seqs']} sequences per step; this run has {seq_len} and "
                            f"{plan.global_seqs}", hint="resume with the same batch settings")
        # how this run's AdamW runs (fused, foreach) is its own, not the saving run's: a --pp run's fused
        # kernel cannot step --tp's DTensors
        kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
        if tp or pp:
            (pipeline_parallel if pp else tensor_parallel).load_plain_state(model, optimizer, state, order)
        else:
            _load_state_dicts(model if fsdp else raw, optimizer, state, fsdp)
        for group, flags in zip(optimizer.param_groups, kernels, strict=True):
            group.update(flags)
        start_step, tokens_seen = state["step"], state["tokens"]
        elapsed_before = state.get("elapsed", 0.0)
        plan.decay_steps = state["decay_steps"] if config.decay_steps is None else config.decay_steps
        plan.warmup_steps = state.get("warmup_steps", plan.warmup_steps)
        ckpt.set_rng_state(state["rng"])
        del state
    metrics = MetricsLog(out / "metrics.jsonl", resume_step=start_step if resume else None) if d.main else None
    peak = config.peak_flops or device_peak_flops(d.device)
    fpt = flops_per_token(n_params, model_config.n_layer, model_config.n_embd, seq_len)
    per_rank = plan.global_seqs // data_world
    B = config.micro_batch_size

    def evaluate() -> float | None:
        if not len(val_samples):
            return None
        model.eval()
        total = 0.0
        if pp:
            return pipeline_parallel.evaluate(model, eval_schedule, val_batcher, config.eval_batches, B, d.device,
                                              config.pp, pp_group)
        with torch.no_grad():
            for b in range(config.eval_batches):
                first = (b * data_world + data_rank) * B
                x, y = val_batcher.batch(range(first, first + B))
                if tp:
                    loss = tensor_parallel.loss(model, x.to(d.device), y.to(d.device), autocast=autocast)
                else:
                    with autocast:
                        loss = model(x.to(d.device), labels=y.to(d.device))
                total += float(loss)
        model.train()
        return d.mean(total / config.eval_batches)

    def save(step: int, elapsed: float) -> None:
        model_sd, optim_sd = ((pipeline_parallel if pp else tensor_parallel).plain_state(model, optimizer, order)
                              if tp or pp else _state_dicts(model if fsdp else raw, optimizer, fsdp))
        if d.main:
            ckpt.save_checkpoint(out, {
                "step": step, "tokens": tokens_seen, "model": model_sd, "optimizer": optim_sd,
                "decay_steps": plan.decay_steps, "warmup_steps": plan.warmup_steps, "rng": ckpt.rng_state(),
                "elapsed": elapsed, "seq_len": seq_len, "global_seqs": plan.global_seqs,
                "config": config.model_dump(mode="json")}, config.keep_checkpoints)
        d.barrier()

    result = RunResult(out, start_step, tokens_seen)
    view = LiveView(plan.total_steps, config.max_time, enabled=d.main)
    model.train()
    step = start_step
    t_run = time.perf_counter()
    last_val: float | None = None
    try:
        with view:
            while plan.total_steps is None or step < plan.total_steps:
                t0 = time.perf_counter()
                decay = plan.decay_steps or 1000  # provisional until the first step is timed (max_time runs)
                warmup = plan.warmup_steps if plan.warmup_steps is not None else _warmup(config, decay)
                lr = lr_at(step, config.lr, config.min_lr, warmup, decay)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = 0.0
                if pp:
                    loss_sum = plan.accum * pipeline_parallel.train_step(
                        model, schedule, batcher,
                        [step * plan.global_seqs + data_rank * per_rank + micro * B for micro in range(plan.accum)],
                        B, d.device, config.pp, pp_group)
                for micro in range(plan.accum if not pp else 0):
                    first = step * plan.global_seqs + data_rank * per_rank + micro * B
                    x, y = batcher.batch(range(first, first + B))
                    if isinstance(model, DDP):
                        model.require_backward_grad_sync = micro == plan.accum - 1
                    x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
                    if tp:                            # forward and backward under loss_parallel
                        loss = tensor_parallel.loss(model, x, y, 1 / plan.accum, autocast)
                    else:
                        with autocast:
                            loss = model(x, labels=y)
                        (loss / plan.accum).backward()
                    loss_sum += float(loss.detach())
                max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
                if layout is not None and not fsdp:      # FSDP2 reduce-scatters over dp in backward itself
                    average_gradients(list(model.parameters()), layout)
                if tp:
                    tensor_parallel.sync_replicated_grads(model)
                if pp:
                    pipeline_parallel.sync_tied_grads(model, config.pp, layout.pipelines())
                    grad_norm = pipeline_parallel.clip_grad_norm(model, max_norm, pp_group)
                elif tp:
                    grad_norm = tensor_parallel.clip_grad_norm(model, max_norm)
                else:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                tokens_seen += plan.batch_tokens
                step_time = time.perf_counter() - t0
                loss_value = d.mean(loss_sum / plan.accum)
                if not math.isfinite(loss_value):
                    raise UserError(f"the loss became {loss_value} at step {step}",
                                    hint="lower --lr or check the data; the last checkpoint is intact")
                result.losses.append(loss_value)
                elapsed = elapsed_before + time.perf_counter() - t_run
                if config.max_time is not None and plan.decay_steps is None:
                    # The cosine horizon of a time budget: steps that fit, from the first step's time.
                    plan.decay_steps = int(d.broadcast(max(step + 1, config.max_time / max(step_time, 1e-9))))
                    plan.warmup_steps = _warmup(config, plan.decay_steps)
                record: dict[str, Any] = {
                    "step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "tokens": tokens_seen,
                    "tokens_per_s": plan.batch_tokens / step_time, "elapsed_s": round(elapsed, 3)}
                record["mfu"] = (record["tokens_per_s"] * fpt / (peak * d.world)) if peak else None
                stop_time = config.max_time is not None and d.broadcast(float(elapsed >= config.max_time)) > 0
                last_step = stop_time or (plan.total_steps is not None and step >= plan.total_steps)
                if step % config.eval_interval == 0 or last_step:
                    last_val = record["val_loss"] = evaluate()
                if metrics is not None and (step % config.log_interval == 0 or last_step or "val_loss" in record):
                    metrics.write(record)
                view.update(record)
                if step % config.checkpoint_interval == 0 or last_step:
                    save(step, elapsed)
                if stop_time:
                    break
    except KeyboardInterrupt:
        if step > start_step:
            save(step, elapsed_before + time.perf_counter() - t_run)
            if d.main:
                log.warning("interrupted at step %d: checkpoint saved, %s", step, resume_hint())
        raise
    if step == start_step and metrics is not None:
        # resumed from the final checkpoint (killed while writing the model): its numbers are in the log
        records = metrics.records()
        result.losses = [r["loss"] for r in records if "loss" in r][-1:]
        last_val = next((r["val_loss"] for r in reversed(records) if r.get("val_loss") is not None), None)
    result.steps, result.tokens, result.val_loss = step, tokens_seen, last_val
    if metrics is not None:
        plot_loss(metrics.records(), out / "loss.png")
    if fsdp or tp or pp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = ((pipeline_parallel if pp else tensor_parallel).plain_state(model, optimizer, order)[0] if tp or pp else
                get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)))
        if d.main:
            raw, model_config, _ = build_model(config, len(tokenizer))
            raw.load_state_dict(full)
    return raw, model_config, result

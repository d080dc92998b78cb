"""The fine-tuning loop: pretraining's schedule, accumulation, checkpoints and metrics, on a PeftModel.

    evaluate()                                       # step 0: the base model's validation loss
    for step in range(start, total):
        lr ← warmup + cosine(step)                   # codefoundry.train.schedule.lr_at
        for micro in range(accum):
            batch ← train[step·G + micro·B …]        # a pure function of the indices (data.py)
            for piece in split_batch(batch):         # length groups, padding cut (pieces.py): the same loss
                loss ← model(x, labels=y) · share / accum   # only the LoRA weights get gradients
                loss.backward()
        clip; AdamW step; log; eval; checkpoint      # metrics.jsonl, checkpoints/ (train.checkpoint)

A checkpoint holds the LoRA weights, the optimizer, the RNG (LoRA dropout) and the cosine horizon,
so a resumed run repeats the uninterrupted one's losses exactly. One process; the base model is
frozen, so its weights never change and never enter a checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from codefoundry.console import resume_hint
from codefoundry.errors import UserError
from codefoundry.finetune.config import FinetuneConfig
from codefoundry.finetune.data import Batches
from codefoundry.finetune.lora import adapter_state, load_adapter_state
from codefoundry.finetune.pieces import group_cost, split_batch
from codefoundry.train import checkpoint as ckpt
from codefoundry.train import lr_at
from codefoundry.train.live import LiveView
from codefoundry.train.metrics import MetricsLog, plot_loss

log = logging.getLogger(__name__)
WARMUP_STEPS = 100  # bigcode-project/starcoder finetune/finetune.py --num_warmup_steps


@dataclass
class FinetuneResult:
    steps: int = 0
    tokens: int = 0
    losses: list[float] = field(default_factory=list)
    val_loss_before: float | None = None     # the base model (LoRA B = 0), before any step
    val_loss: float | None = None            # after the last step
    tokens_per_s: float | None = None        # real (non-padding) tokens per second of training
    peak_memory_bytes: int | None = None
    peak_memory_kind: str = ""


def warmup_for(config: FinetuneConfig, decay: int) -> int:
    if config.warmup_steps is not None:
        return config.warmup_steps
    return min(WARMUP_STEPS, max(1, decay // 10))


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX tiles or AVX-512 BF16): then bf16 runs several times
    faster than fp32 on it; elsewhere bf16 is emulated and slower."""
    cpu = getattr(torch, "cpu", None)
    return any(bool(getattr(cpu, name, lambda: False)()) for name in ("_is_amx_tile_supported",
                                                                      "_is_avx512_bf16_supported"))


def use_bf16(config: FinetuneConfig, device: torch.device) -> bool:
    """`precision` resolved: auto is bf16 on a GPU and on a CPU with bf16 hardware, else fp32."""
    if config.precision != "auto":
        return config.precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16())


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured): CUDA's peak allocation, else the process's peak resident set."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "process_peak_rss"


def evaluate(model: Any, val: Batches, config: FinetuneConfig, device: torch.device, autocast: Any) -> float | None:
    """Token-weighted mean loss over the first `eval_max_sequences` validation sequences."""
    n = min(len(val), config.eval_max_sequences)
    if not n:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for first in range(0, n, config.micro_batch_size):
            b = val.batch(range(first, min(n, first + config.micro_batch_size)))
            for piece in split_batch(b.x, b.y, group_cost(device)):
                if not piece.labels:
                    continue
                with autocast:
                    loss = model(piece.x.to(device), labels=piece.y.to(device))
                total += float(loss) * piece.labels
                count += piece.labels
    model.train(was_training)
    return total / count if count else None


def finetune_loop(model: Any, train: Batches, val: Batches, config: FinetuneConfig, out: Path,
                  device: torch.device, resume: bool = False) -> FinetuneResult:
    """Train the LoRA weights of `model` (a PeftModel on `device`); checkpoints and metrics go to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    G, B = config.micro_batch_size * config.grad_accum, config.micro_batch_size
    total = config.max_steps
    if total is None and config.max_time is None:
        total = max(1, math.ceil(len(train) / G))          # one epoch
    decay: int | None = config.decay_steps or total
    warmup = warmup_for(config, decay) if decay is not None else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=config.lr, fused=device.type in ("cuda", "cpu"))
    cuda = device.type == "cuda"
    bf16 = use_bf16(config, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    result = FinetuneResult()
    start, elapsed_before = 0, 0.0
    state = ckpt.load_checkpoint(out) if resume else None
    if resume and state is None:
        log.info("no checkpoint in %s: starting from step 0", ckpt.checkpoint_dir(out))
    if state is not None:
        if state["global_seqs"] != G or state["seq_len"] != config.seq_len:
            raise UserError(f"the checkpoint in {out} was made with {state['global_seqs']} sequences per step and "
                            f"seq_len {state['seq_len']}; this run has {G} and {config.seq_len}",
                            hint="resume with the same batch settings")
        load_adapter_state(model, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        start, result.tokens, elapsed_before = state["step"], state["tokens"], state["elapsed"]
        decay = state["decay_steps"] if config.decay_steps is None else config.decay_steps
        warmup = state["warmup_steps"]
        result.val_loss_before = state.get("val_loss_before")
        ckpt.set_rng_state(state["rng"])
        del state
    metrics = MetricsLog(out / "metrics.jsonl", resume_step=start if resume else None)
    if start == 0:
        result.val_loss_before = evaluate(model, val, config, device, autocast)
        metrics.write({"step": 0, "val_loss": result.val_loss_before})

    def save(step: int, elapsed: float, rng: dict[str, Any] | None = None) -> None:
        ckpt.save_checkpoint(out, {
            "step": step, "tokens": result.tokens, "adapter": adapter_state(model),
            "optimizer": optimizer.state_dict(), "decay_steps": decay, "warmup_steps": warmup,
            "rng": rng or ckpt.rng_state(), "elapsed": elapsed, "seq_len": config.seq_len, "global_seqs": G,
            "val_loss_before": result.val_loss_before, "config": config.model_dump(mode="json")},
            config.keep_checkpoints)

    view = LiveView(total, config.max_time)
    model.train()
    step, elapsed, train_time, train_tokens = start, elapsed_before, 0.0, 0
    t_run = time.perf_counter()
    try:
        with view:
            while total is None or step < total:
                t0 = time.perf_counter()
                rng_at_step = ckpt.rng_state()   # an interrupted step is redone from here (LoRA dropout draws)
                horizon = decay or 1000          # provisional until the first step is timed (max_time runs)
                lr = lr_at(step, config.lr, config.min_lr, warmup if warmup is not None else
                           warmup_for(config, horizon), horizon)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum, step_tokens = 0.0, 0
                for micro in range(config.grad_accum):
                    first = step * G + micro * B
                    b = train.batch(range(first, first + B))
                    for piece in split_batch(b.x, b.y, group_cost(device)):   # the same loss, less padding
                        with autocast:
                            loss = model(piece.x.to(device, non_blocking=True),
                                         labels=piece.y.to(device, non_blocking=True))
                        (loss * (piece.weight / config.grad_accum)).backward()
                        loss_sum += float(loss.detach()) * piece.weight
                    step_tokens += b.tokens
                grad_norm = float(torch.nn.utils.clip_grad_norm_(
                    params, config.grad_clip if config.grad_clip > 0 else float("inf")))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                rng_at_step = ckpt.rng_state()   # the step is done: the next one starts from here
                result.tokens += step_tokens
                step_time = time.perf_counter() - t0
                train_time += step_time
                train_tokens += step_tokens
                loss_value = loss_sum / config.grad_accum
                if not math.isfinite(loss_value):
                    raise UserError(f"the loss became {loss_value} at step {step}",
                                    hint="lower --lr or check the data; the last checkpoint is intact")
                result.losses.append(loss_value)
                elapsed = elapsed_before + time.perf_counter() - t_run
                if config.max_time is not None and decay is None:
                    # the cosine horizon of a time budget: the steps that fit, from the first step's time
                    decay = int(max(step + 1, config.max_time / max(step_time, 1e-9)))
                    warmup = warmup_for(config, decay)
                record: dict[str, Any] = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                                          "tokens": result.tokens, "tokens_per_s": step_tokens / step_time,
                                          "elapsed_s": round(elapsed, 3), "mfu": None}
                stop_time = config.max_time is not None and elapsed >= config.max_time
                last = stop_time or (total is not None and step >= total)
                if step % config.eval_interval == 0 or last:
                    result.val_loss = record["val_loss"] = evaluate(model, val, config, device, autocast)
                if step % config.log_interval == 0 or last or "val_loss" in record:
                    metrics.write(record)
                view.update(record)
                if step % config.checkpoint_interval == 0 or last:
                    save(step, elapsed)
                if stop_time:
                    break
    except KeyboardInterrupt:
        if step > start:
            save(step, elapsed_before + time.perf_counter() - t_run, rng_at_step)
            log.warning("interrupted at step %d: checkpoint saved, %s", step, resume_hint())
        raise
    result.steps = step
    result.tokens_per_s = train_tokens / train_time if train_time else None
    result.peak_memory_bytes, result.peak_memory_kind = peak_memory(device)
    records = metrics.records()
    if step == start and start > 0:   # resumed after its last step (killed before the adapter was written): the log
        result.losses = [r["loss"] for r in records if "loss" in r][-1:]   # has the last loss and validation loss
        result.val_loss = next((r["val_loss"] for r in reversed(records) if r["step"] > 0 and "val_loss" in r), None)
    if result.val_loss is None and step == start:
        result.val_loss = result.val_loss_before
    plot_loss(records, out / "loss.png")
    return result

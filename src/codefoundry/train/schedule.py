"""Learning rate: linear warmup, then cosine decay to `min_lr` (Megatron's / nanoGPT's schedule)."""

from __future__ import annotations

import math


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """LR of optimizer step `step` (0-based): warmup to `lr`, cosine to `min_lr` at `decay_steps`, then flat.

        lr ┤   ╭──╮
           │  ╱    ╲__
           │ ╱        ╲___
    min_lr ┤╱             ╲______________
           └──┬────────────┬──────────── step
           warmup        decay_steps
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)

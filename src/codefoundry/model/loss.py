"""The LM head fused with cross-entropy: the loss and its gradients without [N, V] logits.

`F.cross_entropy(x @ Wᵀ, labels)` writes the [N, V] logits, keeps the log-softmax output and, on
the way back, allocates three more [N, V] tensors (the NLL gradient, the log-softmax gradient,
the logits gradient); at a vocabulary of 8K-49K these dominate the head's memory and memory
traffic. Here (the approach of Liger-Kernel's fused linear cross-entropy) the logits exist one
[chunk, V] block at a time, in a buffer that stays in cache: the block's loss terms and its
gradient softmax - onehot are computed right after its matmul and fed at once into the two
gradient matmuls, so the forward already holds dx and dW and the backward only scales them by
the incoming gradient. Same arithmetic as the unfused head (three matmuls, one exp per logit),
no [N, V] tensor at all. Without grad mode it computes the loss alone.

Under autocast the matmuls run in the autocast dtype, the softmax and dW's accumulation in
float32.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

IGNORE_INDEX = -100


def default_chunk_rows(device: torch.device) -> int:
    """Rows per [chunk, V] block: cache-sized on CPU (8 MB at V = 8192); on a GPU enough to fill it
    (1,024 × 49,152 logits: 100 MB in bf16 plus their float32 softmax)."""
    return 256 if device.type == "cpu" else 1024


def _matmul_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(x.dtype, weight.dtype)


def _chunked(x: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_rows: int,
             grad_x_needed: bool = False, grad_w_needed: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(mean loss, dL/dx, dL/dW) with the logits one [chunk, V] block at a time; each gradient only if needed."""
    dtype = _matmul_dtype(x, weight)
    acc = torch.promote_types(dtype, torch.float32)              # softmax and dW in float32 at least
    xs, w = x.to(dtype), weight.to(dtype)
    valid = labels != IGNORE_INDEX
    count = valid.sum()
    inv = 1.0 / count.to(acc)                                    # 1/0 = inf: no labels gives nan, as F.cross_entropy
    grad_x = torch.empty_like(xs) if grad_x_needed else None
    grad_w = torch.zeros_like(weight, dtype=acc) if grad_w_needed else None    # e.g. None for a frozen head (LoRA)
    total = torch.zeros((), dtype=acc, device=x.device)
    rows = torch.arange(min(chunk_rows, x.shape[0]), device=x.device)
    block = xs.new_empty(len(rows), w.shape[0])
    with torch.autocast(x.device.type, enabled=False):           # dtypes are chosen above, explicitly
        for start in range(0, x.shape[0], chunk_rows):
            end = min(start + chunk_rows, x.shape[0])
            n, lab, ok = end - start, labels[start:end].clamp(min=0), valid[start:end]
            z = torch.mm(xs[start:end], w.t(), out=block[:n]).to(acc)            # logits (chunk, V)
            top = z.amax(dim=1, keepdim=True)
            target = z.gather(1, lab[:, None])
            z = z.sub_(top).exp_()                                                # e = exp(z - max), in place
            total_e = z.sum(dim=1, keepdim=True)
            total += torch.where(ok[:, None], top + total_e.log() - target, 0.0).sum()
            if grad_x is None and grad_w is None:
                continue
            scale = torch.where(ok, inv, 0.0)[:, None]
            z.mul_(scale / total_e)                                               # softmax / count
            z[rows[:n], lab] -= scale[:, 0]                                       # - onehot / count
            g = z.to(dtype)
            if grad_x is not None:
                torch.mm(g, w, out=grad_x[start:end])
            if grad_w is not None and g.dtype == acc:
                grad_w.addmm_(g.t(), xs[start:end])
            elif grad_w is not None:                                          # bf16 product, float32 sum
                grad_w.add_(g.t() @ xs[start:end])
    return total * inv, grad_x, grad_w


class LinearCrossEntropy(torch.autograd.Function):
    """loss = mean over labels != -100 of cross_entropy(x @ weightᵀ, labels); gradients made in the forward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_rows: int) -> torch.Tensor:
        loss, grad_x, grad_w = _chunked(x, weight, labels, chunk_rows, *ctx.needs_input_grad[:2])
        ctx.save_for_backward(grad_x, grad_w)
        ctx.dtypes = x.dtype, weight.dtype
        return loss

    @staticmethod
    @once_differentiable                     # the gradients were made in the forward: no second order
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        grad_x, grad_w = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        return (None if grad_x is None else (grad_x * grad_loss).to(x_dtype),
                None if grad_w is None else (grad_w * grad_loss).to(w_dtype), None, None)


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         chunk_rows: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of the logits `x @ weightᵀ` (x [N, C], weight [V, C]) against `labels` [N], -100 ignored."""
    chunk_rows = chunk_rows or default_chunk_rows(x.device)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return LinearCrossEntropy.apply(x, weight, labels, chunk_rows)
    return _chunked(x, weight, labels, chunk_rows)[0]


def causal_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`linear_cross_entropy` of hidden states [B, T, C] against labels [B, T], the head run only where a label is.

    Fine-tuning rows learn a few tokens each (a response, a hole's middle): the other positions' logits
    would be computed and then weighted by zero. Dropping their rows first is the same mean, and the head
    (a [V, C] matmul per row, forward and backward) costs only the labelled rows.
    """
    x, y = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
    keep = y != IGNORE_INDEX
    if not bool(keep.all()):
        rows = keep.nonzero().squeeze(1)
        x, y = x.index_select(0, rows), y.index_select(0, rows)
    return linear_cross_entropy(x, weight, y)

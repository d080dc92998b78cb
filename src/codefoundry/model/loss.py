"""The LM head fused with cross-entropy: logits, loss and their gradients without [N, V] temporaries.

`F.cross_entropy(x @ Wᵀ, labels)` keeps the log-softmax output and, on the way back, allocates
three more [N, V] tensors (the one-hot NLL gradient, the log-softmax gradient, the logits
gradient); at a vocabulary of 8K-49K these dominate the head's memory traffic. Here the
forward keeps only the logits and one log-sum-exp per row; the backward rebuilds
softmax - onehot in a [chunk, V] buffer, chunk by chunk, and feeds it straight into the two
matmuls. Same arithmetic (exp, subtract, two matmuls), fewer passes over memory.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
CHUNK_ROWS = 256    # rows of the [chunk, V] gradient buffer: 8 MB at V = 8192 in float32, cache-sized


class LinearCrossEntropy(torch.autograd.Function):
    """loss = mean over labels != -100 of cross_entropy(x @ weightᵀ, labels); also returns the logits."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits = x @ weight.t()                                  # (N, V); autocast may make it bf16
        acc = torch.promote_types(logits.dtype, torch.float32)     # log-sum-exp in float32 at least
        lse = torch.cat([torch.logsumexp(c.to(acc), dim=-1) for c in logits.split(chunk_rows)])  # (N,)
        valid = labels != IGNORE_INDEX
        target = logits.gather(1, labels.clamp(min=0)[:, None])[:, 0].to(lse.dtype)
        count = valid.sum()
        loss = torch.where(valid, lse - target, 0.0).sum() / count
        ctx.save_for_backward(x, weight, labels, logits, lse, count)
        ctx.chunk_rows = chunk_rows
        ctx.mark_non_differentiable(logits)
        ctx.set_materialize_grads(False)                         # no [N, V] zeros for the logits' "gradient"
        return loss, logits

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_logits: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        x, weight, labels, logits, lse, count = ctx.saved_tensors
        dtype = logits.dtype                                     # matmuls in the forward's dtype (autocast)
        w, xs = weight.to(dtype), x.to(dtype)
        grad_x = torch.empty_like(xs) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
        scale = (grad_loss / count).to(lse.dtype)
        buffer = logits.new_empty(min(ctx.chunk_rows, logits.shape[0]), logits.shape[1], dtype=lse.dtype)
        for start in range(0, logits.shape[0], ctx.chunk_rows):
            end = min(start + ctx.chunk_rows, logits.shape[0])
            rows = torch.arange(end - start, device=logits.device)
            lab = labels[start:end]
            g = buffer[: end - start]                                                 # reused: (chunk, V)
            torch.sub(logits[start:end], lse[start:end, None], out=g).exp_()          # softmax
            g[rows, lab.clamp(min=0)] -= 1.0                                          # - onehot
            g.mul_(torch.where(lab != IGNORE_INDEX, scale, 0.0)[:, None])
            g = g.to(dtype)
            if grad_x is not None:
                torch.mm(g, w, out=grad_x[start:end])
            if grad_w is not None:
                grad_w.addmm_(g.t(), xs[start:end])
        return (None if grad_x is None else grad_x.to(x.dtype),
                None if grad_w is None else grad_w.to(weight.dtype), None, None)


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         chunk_rows: int = CHUNK_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) for hidden states `x` [N, C], head `weight` [V, C], `labels` [N] (-100 ignored)."""
    return LinearCrossEntropy.apply(x, weight, labels, chunk_rows)

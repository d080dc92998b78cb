"""A padded batch cut into row groups of similar length, each trimmed after its last learned position.

Fine-tuning rows differ in length (a response, a hole's request), and a batch pads every row to the
longest; the padding costs as much compute as real tokens. Attention is causal, so positions after a
row's last label change none of its losses: each group of rows can be cut to its own longest
"last label + 1" without changing any loss. The batch's mean loss is then the label-weighted sum of
the groups' mean losses, the same number and the same gradients as one padded forward:

    rows sorted by length │ group 1: short rows, few columns │ group 2: long rows │ …
    loss = Σ_g (labels_g / labels) · mean loss_g

Groups are chosen to minimise the padded area plus a fixed cost per extra forward (small matmuls
run below the CPU's peak), by dynamic programming over the sorted lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100
# what one more forward + backward costs, in padded tokens. CPU: measured on SmolLM2 in bf16, a demo batch of
# 8 line-FIM requests cut into 4 groups (1,560 → 1,249 tokens) took more CPU time than uncut (oneDNN builds
# kernels per matmul shape, and short groups run below peak), so a group must save a lot; a GPU runs a short
# batch in about the time of its kernel launches
GROUP_COST_TOKENS = {"cpu": 512, "cuda": 2048}


def group_cost(device: torch.device) -> int:
    return GROUP_COST_TOKENS.get(device.type, GROUP_COST_TOKENS["cuda"])


@dataclass(frozen=True)
class Piece:
    x: torch.Tensor        # [b, t] input ids
    y: torch.Tensor        # [b, t] labels, -100 ignored
    labels: int            # learned positions in this piece
    weight: float          # labels / the batch's labels: this piece's share of the batch's mean loss


def used_lengths(y: torch.Tensor) -> torch.Tensor:
    """Per row, 1 + the index of its last labelled position (0 for a row without labels)."""
    has = y != IGNORE
    width = y.shape[1]
    last = torch.where(has, torch.arange(1, width + 1), 0)
    return last.amax(dim=1)


def plan_groups(lengths: list[int], cost: int = GROUP_COST_TOKENS["cpu"]) -> list[list[int]]:
    """Row indices grouped (by ascending length) to minimise Σ rows·longest + cost per group."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n          # best[j]: the first j sorted rows, grouped
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):
            c = best[i] + (j - i) * longest + cost
            if c < best[j]:
                best[j], cut[j] = c, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def split_batch(x: torch.Tensor, y: torch.Tensor, cost: int = GROUP_COST_TOKENS["cpu"]) -> list[Piece]:
    """The pieces whose label-weighted mean losses sum to the batch's mean loss (rows without labels dropped)."""
    lengths = used_lengths(y).tolist()
    total = int((y != IGNORE).sum())
    if not total:                               # no labels: the batch as it is (its loss is nan, as unsplit)
        return [Piece(x, y, 0, 1.0)]
    pieces = []
    for group in plan_groups(lengths, cost):
        rows = [i for i in group if lengths[i] > 0]
        if not rows:
            continue
        width = max(lengths[i] for i in rows)
        index = torch.tensor(rows)
        px, py = x[index, :width], y[index, :width]
        n = int((py != IGNORE).sum())
        pieces.append(Piece(px, py, n, n / total))
    return pieces

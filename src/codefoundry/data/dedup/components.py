"""Connected components of an edge list (vectorized union-find: min-label propagation + pointer jumping)."""

from __future__ import annotations

import numpy as np


def components(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, label): every node that appears in an edge, sorted, and its component's smallest node."""
    if not len(u):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    nodes, inverse = np.unique(np.concatenate([u, v]), return_inverse=True)
    a, b = inverse[: len(u)], inverse[len(u):]
    label = np.arange(len(nodes))
    while True:
        lo = np.minimum(label[a], label[b])
        before = label.copy()
        np.minimum.at(label, a, lo)
        np.minimum.at(label, b, lo)
        while True:  # pointer jumping: label ← label[label] until it stops changing
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
        if np.array_equal(label, before):
            return nodes, nodes[label]

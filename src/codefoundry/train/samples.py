"""Training samples: sample index → a packed context of seq_len + 1 tokens → (inputs, labels).

A sample is a pure function of (seed, index): the index picks an epoch and a position in that
epoch's permutation of chunks, and FIM draws from the rng of (seed, index). The optimizer step
`s` of a run with G sequences per global batch reads indices `s·G … s·G + G − 1`, split over
processes and micro-batches, so 1 process and N processes (same G), or a resumed run, see the
same samples.

Subsets are blended by weight: an epoch holds round(chunks × weight) chunks of each subset
(cycling through them when the weight is above 1), shuffled together.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from codefoundry.errors import UserError
from codefoundry.train.fim import FimTokens, TextCodec, fim_sample
from codefoundry.train.pack import chunk_count, open_split


class PackedSamples:
    """The chunks of one split of a `tokens/` artifact, in a seeded order per epoch."""

    def __init__(self, tokens_dir: str | Path, split: str, seq_len: int, seed: int, shuffle: bool = True) -> None:
        self.seq_len, self.seed, self.shuffle = seq_len, seed, shuffle
        self.files = [f for f in open_split(tokens_dir, split).values() if f.weight > 0]
        plan = []  # (file number, chunk number) for one epoch, before shuffling
        for i, f in enumerate(self.files):
            chunks = chunk_count(len(f.tokens), seq_len)
            if chunks:
                take = round(chunks * f.weight)
                plan.append(np.stack([np.full(take, i), np.arange(take) % chunks], axis=1))
        self.plan = np.concatenate(plan) if plan else np.zeros((0, 2), dtype=np.int64)
        self.split = split

    def __len__(self) -> int:
        """Chunks per epoch."""
        return len(self.plan)

    @lru_cache(maxsize=2)  # noqa: B019 (one or two live epochs per object)
    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.plan))
        return np.random.RandomState(np.array([self.seed, epoch, 0x5EED], dtype=np.uint32)).permutation(len(self.plan))

    def context(self, index: int) -> np.ndarray:
        """The raw packed context of sample `index`: seq_len + 1 tokens (int64)."""
        if not len(self.plan):
            raise UserError(f"the {self.split} split has fewer than {self.seq_len + 1} tokens: too little data "
                            f"for one sequence of {self.seq_len}", hint="use more data or a smaller --seq-len")
        epoch, pos = divmod(index, len(self.plan))
        file_no, chunk = self.plan[self._order(epoch)[pos]]
        start = int(chunk) * self.seq_len
        return np.asarray(self.files[file_no].tokens[start:start + self.seq_len + 1], dtype=np.int64)


class Batcher:
    """Sample indices → FIM-permuted (input_ids, labels) tensors of shape [B, seq_len]."""

    def __init__(self, samples: PackedSamples, tokenizer, seed: int, fim_rate: float, spm_rate: float) -> None:
        self.samples, self.seed, self.fim_rate, self.spm_rate = samples, seed, fim_rate, spm_rate
        self.codec = TextCodec.from_tokenizer(tokenizer)
        self.special = FimTokens.from_tokenizer(tokenizer) if fim_rate > 0 else None

    def sample(self, index: int) -> np.ndarray:
        ctx = self.samples.context(index)
        if self.fim_rate > 0:
            ctx = fim_sample(ctx, self.seed, index, self.codec, self.special, self.fim_rate, self.spm_rate)
        return ctx

    def batch(self, indices: range | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.from_numpy(np.stack([self.sample(i) for i in indices]))
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

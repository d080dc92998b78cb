"""Prompt-lookup ("n-gram") speculative decoding: drafts copied from the sequence itself, verified in one forward.

Code edits, refactors and fill-in-the-middle answers repeat long spans of their prompt. The
proposer looks for the last `n` tokens of a sequence (n from `max_ngram` down to `min_ngram`)
earlier in the same sequence (prompt and generated text alike) and proposes the tokens that
followed the most recent match as a draft — no draft model (llama.cpp's lookup decoding,
vLLM's `ngram` method, HF's prompt lookup):

    tokens   … for x in items : \\n  print ( x ) \\n … for x in items :
                                    └ followed by ─┘                └ last 3 tokens ┘
    draft    \\n print ( x ) …

The engine then computes the sequence's last token and the k draft tokens in one forward
(logits at all 1 + k positions), samples a token at every position exactly as it would have
without a draft (same penalties, same counter-based random draw for that step), and keeps the
draft up to the first position where the sampled token differs, plus that sampled token:

    position     0    1    2    3            draft    d1 d2 d3
    sampled      s0   s1   s2   s3           kept     s0 s1 (s0 = d1, s1 != d2)

Why this is the standard speculative-sampling rule for a point-mass draft (Leviathan et al.
2023; Chen et al. 2023): the draft distribution q puts all its mass on d, so the rule "accept
d with probability min(1, p(d) / q(d)) = p(d), else sample from norm(max(0, p - q)) = p with d
removed and renormalized" is what the sampler's inverse-CDF draw does with one uniform u: the
drawn token is d exactly when u falls in d's interval of the CDF (probability p(d)), and
otherwise it is a draw from p conditioned on not being d. So every kept token has the model's
distribution, greedy output is unchanged, and a seeded request produces the same tokens with
or without speculation. The K/V written for rejected draft positions are rolled back: the
sequence's computed count covers only kept tokens, and blocks past them are given back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_NUM_SPECULATIVE_TOKENS = 8     # draft length; cheap to verify where decoding is memory-bound
DEFAULT_MAX_NGRAM = 4
DEFAULT_MIN_NGRAM = 2                   # 1-token matches are frequent and mostly wrong on fresh text
LOOKBACK = 8192                         # search at most this many trailing tokens: bounded cost per step


@dataclass(frozen=True)
class NgramProposer:
    """Drafts for a sequence from the most recent earlier occurrence of its last n-gram (see the module docstring)."""

    max_ngram: int = DEFAULT_MAX_NGRAM
    min_ngram: int = DEFAULT_MIN_NGRAM
    lookback: int = LOOKBACK

    def __post_init__(self) -> None:
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {self.min_ngram} and {self.max_ngram}")

    def propose(self, token_ids: Sequence[int] | np.ndarray, num_tokens: int) -> list[int]:
        """Up to `num_tokens` draft tokens to follow `token_ids` ([] when no n-gram of it recurs)."""
        if num_tokens < 1 or len(token_ids) <= self.min_ngram:
            return []
        ids = np.asarray(token_ids[-self.lookback:], dtype=np.int64)
        n_ids = len(ids)
        for n in range(min(self.max_ngram, n_ids - 1), self.min_ngram - 1, -1):
            pattern = ids[n_ids - n:]
            # candidate starts 0 .. n_ids - n - 1: every window but the suffix itself
            hits = ids[:n_ids - 1] == pattern[0]
            starts = np.flatnonzero(hits[:n_ids - n])
            for j in range(1, n):
                if not len(starts):
                    break
                starts = starts[ids[starts + j] == pattern[j]]
            if len(starts):
                follow = int(starts[-1]) + n          # the most recent match: the likeliest continuation
                return ids[follow:follow + num_tokens].tolist()
        return []


def num_accepted(draft: Sequence[int], sampled: Sequence[int]) -> int:
    """How many draft tokens the verification kept: the length of the prefix where `sampled` agrees with `draft`.

    `sampled[i]` is the token drawn at draft position i (after the sequence's last token and
    `draft[:i]`); the first disagreement is itself kept, as the sampled replacement.
    """
    for i, d in enumerate(draft):
        if i >= len(sampled) or sampled[i] != d:
            return i
    return len(draft)


class Drafted(Sequence[int]):
    """`prefix + extra` without copying `prefix` (a sequence's tokens followed by part of its draft)."""

    def __init__(self, prefix: Sequence[int], extra: Sequence[int]) -> None:
        self.prefix, self.extra = prefix, extra

    def __len__(self) -> int:
        return len(self.prefix) + len(self.extra)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return list(self)[i]
        n = len(self.prefix)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.prefix[i] if i < n else self.extra[i - n]

    def __iter__(self) -> Iterator[int]:
        yield from self.prefix
        yield from self.extra

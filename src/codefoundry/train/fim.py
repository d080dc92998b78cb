"""Fill-in-the-middle, exactly as bigcode Megatron-LM applies it (`megatron/data/gpt_dataset.py`,
ported there from EleutherAI gpt-neox FIM-clean; Bavarian et al. 2022).

FIM runs on a packed context of `seq_len + 1` tokens, after chunking. The context is split on
`<|endoftext|>`; each document fragment is, with probability `fim_rate`, decoded to text, cut at
two character positions drawn uniformly from `[0, len(text)]`, re-tokenized piece by piece and
reordered; the EODs are put back, and the result is truncated (or right-padded with
`<fim_pad>`) to the original length:

    packed context (seq_len + 1 tokens):
    ┌──────── document A (tail) ────────┐   ┌────── document B ──────┐   ┌─ C (head) ─┐
    │ . . . . . . . . . . . . . . . . . │EOD│ . . . . . . . . . . . .│EOD│ . . . . . .│
    └───────────────────────────────────┘   └────────────────────────┘   └────────────┘
        each fragment, with p = fim_rate:   text[:lo] | text[lo:hi] | text[hi:]
                                             prefix      middle       suffix
    PSM (1 - spm_rate):  <fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle
    SPM (spm_rate):      <fim_prefix> <fim_suffix> suffix <fim_middle> prefix middle   (StarCoder's "variant 2")
    then: re-join with EOD → truncate to seq_len + 1, or pad the end with <fim_pad>

Megatron draws from one `np.random.RandomState(seed)` per dataset, so a sample depends on
the order samples were read. Here the RandomState is seeded with `(seed, sample_index)`, so a
resumed or distributed run sees exactly the same samples. The draws per fragment are the
reference's, in its order: `binomial(1, fim_rate)`, `randint(0, len+1, size=2)`,
`binomial(1, spm_rate)`. Differences, on purpose: the EOD of an empty fragment (two EODs in a
row) is kept (Megatron drops it), and decoding a fragment that starts or ends inside a
multi-byte character can alter those bytes, as in the reference (whose comments warn about it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from codefoundry.errors import ArtifactError

# Defaults from bigcode Megatron-LM `megatron/arguments.py` and every BigCode pretraining script.
FIM_RATE = 0.5
FIM_SPM_RATE = 0.5


@dataclass(frozen=True)
class FimTokens:
    """Ids of the sentinels (StarCoder's tokenizer: 0, 1, 2, 3, 4)."""

    eod: int
    prefix: int
    middle: int
    suffix: int
    pad: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> FimTokens:
        """Look the sentinels up by name in an HF tokenizer (PreTrainedTokenizerFast)."""
        names = {"eod": "<|endoftext|>", "prefix": "<fim_prefix>", "middle": "<fim_middle>",
                 "suffix": "<fim_suffix>", "pad": "<fim_pad>"}
        ids = {}
        for field, token in names.items():
            tid = tokenizer.convert_tokens_to_ids(token)
            if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
                raise ArtifactError(f"the tokenizer has no {token} token, which FIM needs",
                                    hint="train it with StarCoder's special tokens, or set fim_rate to 0")
            ids[field] = int(tid)
        return cls(**ids)


@dataclass(frozen=True)
class TextCodec:
    """Detokenize/tokenize, the two tokenizer calls FIM makes (special tokens stay text ↔ ids)."""

    decode: Callable[[Sequence[int]], str]
    encode: Callable[[str], list[int]]

    @classmethod
    def from_tokenizer(cls, tokenizer) -> TextCodec:
        def decode(ids: Sequence[int]) -> str:
            return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

        def encode(text: str) -> list[int]:
            return tokenizer.encode(text, add_special_tokens=False) if text else []

        return cls(decode, encode)


def sample_rng(seed: int, index: int) -> np.random.RandomState:
    """The rng of sample `index`: a function of (seed, index) only."""
    return np.random.RandomState(np.array([seed & 0xFFFFFFFF, index & 0xFFFFFFFF, index >> 32], dtype=np.uint32))


def permute(
    tokens: np.ndarray,
    rng: np.random.RandomState,
    codec: TextCodec,
    special: FimTokens,
    fim_rate: float = FIM_RATE,
    spm_rate: float = FIM_SPM_RATE,
) -> np.ndarray:
    """One document fragment → itself, or its PSM/SPM permutation (no truncation or padding)."""
    if not rng.binomial(1, fim_rate):
        return tokens
    text = codec.decode(tokens.tolist())
    # A boundary can be 0 (empty prefix) or len(text) (empty suffix); equal ones give an empty middle.
    lo, hi = sorted(rng.randint(low=0, high=len(text) + 1, size=2).tolist())
    prefix = np.asarray(codec.encode(text[:lo]), dtype=np.int64)
    middle = np.asarray(codec.encode(text[lo:hi]), dtype=np.int64)
    suffix = np.asarray(codec.encode(text[hi:]), dtype=np.int64)
    if rng.binomial(1, spm_rate):  # SPM, variant 2 of Bavarian et al. (StarCoder)
        parts = [[special.prefix, special.suffix], suffix, [special.middle], prefix, middle]
    else:  # PSM
        parts = [[special.prefix], prefix, [special.suffix], suffix, [special.middle], middle]
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def apply_fim(
    sample: np.ndarray,
    rng: np.random.RandomState,
    codec: TextCodec,
    special: FimTokens,
    fim_rate: float = FIM_RATE,
    spm_rate: float = FIM_SPM_RATE,
) -> np.ndarray:
    """A packed context → the same length with each document fragment maybe FIM-permuted."""
    sample = np.asarray(sample, dtype=np.int64)
    if fim_rate <= 0:
        return sample
    length = sample.shape[0]
    breaks = np.flatnonzero(sample == special.eod)
    pieces: list[np.ndarray] = []
    start = 0
    for loc in breaks.tolist():
        if loc > start:
            pieces.append(permute(sample[start:loc], rng, codec, special, fim_rate, spm_rate))
        pieces.append(np.array([special.eod], dtype=np.int64))
        start = loc + 1
    if start < length:
        pieces.append(permute(sample[start:], rng, codec, special, fim_rate, spm_rate))
    out = np.concatenate(pieces) if pieces else sample
    if out.shape[0] > length:
        return out[:length]
    if out.shape[0] < length:
        return np.concatenate([out, np.full(length - out.shape[0], special.pad, dtype=np.int64)])
    return out


def fim_sample(
    sample: np.ndarray,
    seed: int,
    index: int,
    codec: TextCodec,
    special: FimTokens,
    fim_rate: float = FIM_RATE,
    spm_rate: float = FIM_SPM_RATE,
) -> np.ndarray:
    """`apply_fim` with the rng of sample `index` (deterministic from (seed, index))."""
    return apply_fim(sample, sample_rng(seed, index), codec, special, fim_rate, spm_rate)

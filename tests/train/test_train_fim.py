"""FIM: the permutation matches bigcode Megatron's pseudocode, formats, rates, pad/truncate, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from codefoundry.train.fim import FimTokens, TextCodec, apply_fim, fim_sample, permute, sample_rng


@pytest.fixture(scope="module")
def tok(train_tokenizer_dir: Path):
    from codefoundry.tokenizer import load_tokenizer

    return load_tokenizer(train_tokenizer_dir)


@pytest.fixture(scope="module")
def codec(tok) -> TextCodec:
    return TextCodec.from_tokenizer(tok)


@pytest.fixture(scope="module")
def special(tok) -> FimTokens:
    return FimTokens.from_tokenizer(tok)


DOCS = [
    "def add(a, b):\n    return a + b\n",
    "import os\n\nclass Walker:\n    def __init__(self, root):\n        self.root = root  # é ünïcode\n",
    "x = [i * i for i in range(10)]\nprint(sum(x))\n",
]


def reference_sample(sample, rng, tokenize, detokenize, sp, fim_rate, spm_rate):
    """reference/model.md §3, written out literally: per EOD-separated segment, then truncate or pad."""
    def permute(tokens):
        if not rng.binomial(1, fim_rate):
            return list(tokens)
        s = detokenize(list(tokens))
        lo, hi = sorted(rng.randint(0, len(s) + 1, size=2))
        pre, mid, suf = tokenize(s[:lo]), tokenize(s[lo:hi]), tokenize(s[hi:])
        if rng.binomial(1, spm_rate):
            return [sp.prefix, sp.suffix, *suf, sp.middle, *pre, *mid]
        return [sp.prefix, *pre, sp.suffix, *suf, sp.middle, *mid]

    segments, current = [], []
    for t in list(sample):
        if t == sp.eod:
            segments.append(current)
            current = []
        else:
            current.append(t)
    segments.append(current)
    out: list[int] = []
    for i, seg in enumerate(segments):
        if seg:
            out += permute(seg)
        if i < len(segments) - 1:
            out.append(sp.eod)
    out = out[:len(sample)]
    return out + [sp.pad] * (len(sample) - len(out))


def packed(tok, special, length: int, offset: int = 0) -> np.ndarray:
    ids: list[int] = []
    while len(ids) < length + offset:
        for d in DOCS:
            ids += [*tok.encode(d, add_special_tokens=False), special.eod]
    return np.asarray(ids[offset:offset + length], dtype=np.int64)


@pytest.mark.parametrize("seed", [0, 1, 7, 1234])
def test_matches_reference_pseudocode_on_known_seeds(tok, codec, special, seed: int) -> None:
    for index in range(25):
        sample = packed(tok, special, 96, offset=index * 5)
        ours = fim_sample(sample, seed, index, codec, special, 0.5, 0.5)
        ref = reference_sample(sample, sample_rng(seed, index), codec.encode, codec.decode, special, 0.5, 0.5)
        assert ours.tolist() == ref
        assert len(ours) == len(sample)


def _pieces(out: list[int], sp: FimTokens) -> tuple[list[int], list[int], list[int], str]:
    """Split one permuted document into (prefix, suffix, middle) and say which order it was in."""
    assert out[0] == sp.prefix
    if out[1] == sp.suffix:  # SPM: <PRE><SUF> suffix <MID> prefix+middle
        m = out.index(sp.middle)
        return [], out[2:m], out[m + 1:], "spm"
    s, m = out.index(sp.suffix), out.index(sp.middle)
    return out[1:s], out[s + 1:m], out[m + 1:], "psm"


def test_psm_and_spm_orders_reconstruct_the_document(tok, codec, special) -> None:
    doc = DOCS[1]
    ids = np.asarray(tok.encode(doc, add_special_tokens=False), dtype=np.int64)
    seen = set()
    for index in range(40):
        out = permute(ids, sample_rng(3, index), codec, special, fim_rate=1.0, spm_rate=0.5).tolist()
        pre, suf, mid, order = _pieces(out, special)
        seen.add(order)
        assert out.count(special.prefix) == out.count(special.suffix) == out.count(special.middle) == 1
        # SPM puts prefix+middle after <fim_middle>, so `mid` holds both and `pre` is empty
        assert codec.decode(pre) + codec.decode(mid) + codec.decode(suf) == doc
        # the permuted document is 3 sentinels longer (± re-tokenization), apply_fim cuts it back
        assert len(apply_fim(ids, sample_rng(3, index), codec, special, fim_rate=1.0)) == len(ids)
    assert seen == {"psm", "spm"}


def test_rates_are_statistical(tok, codec, special) -> None:
    doc = np.asarray(tok.encode(DOCS[0], add_special_tokens=False), dtype=np.int64)
    permuted = spm = 0
    n = 600
    for index in range(n):
        out = apply_fim(doc, sample_rng(11, index), codec, special, fim_rate=0.5, spm_rate=0.5).tolist()
        if out[0] == special.prefix:
            permuted += 1
            spm += out[1] == special.suffix
        else:
            assert out == doc.tolist()
    assert 0.44 < permuted / n < 0.56, permuted
    assert 0.42 < spm / permuted < 0.58, spm
    print(f"FIM rate {permuted / n:.3f} (0.5), SPM share {spm / permuted:.3f} (0.5) over {n} samples")


def test_pad_and_truncate(tok, codec, special) -> None:
    # An empty middle and suffix can shorten a document (tokens merge less): padded with <fim_pad>.
    sample = packed(tok, special, 64)
    for index in range(50):
        out = fim_sample(sample, 5, index, codec, special, fim_rate=1.0, spm_rate=0.0)
        assert len(out) == 64
        assert out[0] == special.prefix
    # the three sentinels make a permuted context longer than its input: the end is cut off
    doc = np.asarray(tok.encode(DOCS[2], add_special_tokens=False), dtype=np.int64)
    out = apply_fim(doc, sample_rng(0, 0), codec, special, fim_rate=1.0, spm_rate=0.0)
    assert len(out) == len(doc) and special.middle in out.tolist()


def test_rate_zero_and_eods_are_kept(tok, codec, special) -> None:
    sample = packed(tok, special, 80)
    assert fim_sample(sample, 0, 0, codec, special, fim_rate=0.0).tolist() == sample.tolist()
    doubled = np.concatenate([[special.eod, special.eod], sample[:40]])
    out = fim_sample(doubled, 0, 3, codec, special, fim_rate=1.0)
    assert out[:2].tolist() == [special.eod, special.eod]


def test_deterministic_from_seed_and_index(tok, codec, special) -> None:
    sample = packed(tok, special, 128)
    a = [fim_sample(sample, 42, i, codec, special).tolist() for i in range(12)]
    b = [fim_sample(sample, 42, i, codec, special).tolist() for i in reversed(range(12))][::-1]
    assert a == b  # order of access does not matter
    c = [fim_sample(sample, 43, i, codec, special).tolist() for i in range(12)]
    assert a != c
    assert len({tuple(x) for x in a}) > 1

"""Hostile GGUF files: cut short, counts made huge, types changed: `import_gguf` gives an ArtifactError or a model.

A real GGUF export of a small Llama (with its tokenizer arrays) is the seed; hypothesis cuts
it, overwrites bytes in its header and metadata (where counts, lengths and type tags live) or
writes a huge 64-bit count at a random 8-byte-aligned spot. Every example ends within the
deadline, allocates nothing near the size a lying count claims, and raises only UserError
(ArtifactError) — or imports a model when the change happened to be harmless.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from fuzzing import fuzz, peak_rss_mb
from hypothesis import given
from hypothesis import strategies as st

from codefoundry.errors import UserError
from codefoundry.model import LlamaConfig, LlamaForCausalLM, export_gguf, import_gguf, save_pretrained

SHAPE = dict(vocab_size=2048, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)


class Seed(tuple):
    def __repr__(self) -> str:   # a failing example prints this, not a megabyte of bytes
        return f"<GGUF seed: {len(self[0])} bytes, header {self[1]}>"


@pytest.fixture(scope="module")
def seed_gguf(tmp_path_factory, tiny_tokenizer_dir: Path) -> tuple[bytes, int]:
    """The exported file's bytes, and where its tensor data starts (everything before is header and metadata)."""
    from codefoundry.model.gguf_import import read_gguf

    root = tmp_path_factory.mktemp("gguf-seed")
    torch.manual_seed(0)
    save_pretrained(LlamaForCausalLM(LlamaConfig(**SHAPE)), root / "m", tokenizer_dir=tiny_tokenizer_dir)
    path = export_gguf(root / "m", root / "m.gguf")
    data_start = min(t.data_offset for t in read_gguf(path).tensors)
    return Seed((path.read_bytes(), data_start))


def _import(tmp: Path, data: bytes) -> None:
    (tmp / "x.gguf").write_bytes(data)
    shutil.rmtree(tmp / "out", ignore_errors=True)
    try:
        import_gguf(tmp / "x.gguf", tmp / "out")
    except UserError as e:
        assert "x.gguf" in str(e) or "GGUF" in str(e), e
        assert not (tmp / "out").exists()            # nothing half-written


@fuzz(8)
@given(cut=st.none() | st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4),
       huge=st.none() | st.tuples(st.floats(0, 1), st.sampled_from([2**63 - 1, 2**64 - 1, 2**40, 2**32 + 1, 0])))
def test_fuzz_gguf_is_an_artifact_error_or_a_model(tmp_path_factory, seed_gguf, cut, flips, huge):
    whole, header_end = seed_gguf
    data = bytearray(whole)
    for where, value in flips:
        data[int(where * (header_end - 1))] = value
    if huge is not None:
        at = int(huge[0] * (header_end - 8)) // 8 * 8
        data[at: at + 8] = huge[1].to_bytes(8, "little")
    if cut is not None:
        data = data[: int(cut * header_end * 1.2)]
    base = peak_rss_mb()
    _import(tmp_path_factory.mktemp("gguf"), bytes(data))
    assert peak_rss_mb() - base < 512, "a lying count was allocated"


def test_a_merge_of_tokens_not_in_the_vocabulary_is_an_artifact_error(tmp_path: Path, seed_gguf) -> None:
    """The tokenizers library raised a bare Exception ("Token ... out of vocabulary") through import_gguf."""
    whole, _ = seed_gguf
    at = whole.index(b"tokenizer.ggml.merges")
    length_at = at + len(b"tokenizer.ggml.merges") + 4 + 4 + 8            # key, value type, item type, count
    length = int.from_bytes(whole[length_at: length_at + 8], "little")
    data = bytearray(whole)                                                # the first merge: tokens no vocabulary holds
    data[length_at + 8: length_at + 8 + length] = b"\x01" * (length - 2) + b" \x01"
    (tmp_path / "x.gguf").write_bytes(bytes(data))
    with pytest.raises(UserError, match="GGUF tokenizer is inconsistent"):
        import_gguf(tmp_path / "x.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_every_truncation_of_the_header_is_an_artifact_error(tmp_path: Path, seed_gguf) -> None:
    whole, header_end = seed_gguf
    step = max(1, header_end // 17)
    for cut in range(0, header_end + 64, step):
        (tmp_path / "x.gguf").write_bytes(whole[:cut])
        with pytest.raises(UserError):
            import_gguf(tmp_path / "x.gguf", tmp_path / "out")

"""Train a byte-level BPE tokenizer the way StarCoder's was trained, on a codefoundry dataset.

As bigcode-tokenizer `starcoder/train_bpe_tokenizer.py` (reference/model.md §2): HF
`tokenizers` BPE; digits split one by one, then GPT-2's byte-level pre-tokenizer; the 19
special tokens take ids 0-18; the vocabulary size includes them. Saved as an HF tokenizer
directory (tokenizer.json, tokenizer_config.json, special_tokens_map.json) with a manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from codefoundry.atomic import atomic_write_json
from codefoundry.config import StageConfig
from codefoundry.console import console, progress_bar
from codefoundry.errors import ConfigError, UserError
from codefoundry.manifest import check_out_dir, write_manifest
from codefoundry.tokenizer.corpus import (
    SampleStats,
    check_subset_weights,
    dataset_shards,
    language_bytes,
    language_targets,
    sample_documents,
)
from codefoundry.tokenizer.load import load_tokenizer
from codefoundry.tokenizer.special import EOS, SPECIAL_TOKENS

BYTE_ALPHABET = 256
MAX_VOCAB = 2**20
"""`tokenizers` allocates for the whole vocabulary up front (a size of 2**31 aborts the process); the largest
code tokenizers have a few hundred thousand tokens."""


class TokenizerTrainConfig(StageConfig):
    """Settings of `codefoundry tokenizer train`."""

    vocab_size: int = Field(49152, ge=len(SPECIAL_TOKENS) + BYTE_ALPHABET, le=MAX_VOCAB)
    """Tokens in the vocabulary, special tokens included (StarCoder: 49152)."""
    byte_budget: int = Field(1_000_000_000, gt=0)
    """Bytes of code to train on, sampled across languages (the whole dataset if it is smaller)."""
    language_alpha: float = Field(1.0, gt=0.0, le=1.0)
    """Language shares ∝ bytes**alpha: 1 keeps the data's mix, smaller values lift rare languages."""
    min_frequency: int = Field(2, ge=0)
    """A pair is merged only if it occurs at least this often (HF tokenizers' BpeTrainer option)."""
    max_document_bytes: int = Field(1_000_000, gt=0)
    """Skip larger files (The Stack kept files up to 1 MB)."""
    subset_weights: dict[str, float] = Field(default_factory=dict)
    """Weight per subset (`data/<subset>/`: files, notebooks, commits, issues), as `train pack` has them:
    missing subsets weigh 1.0, 0 leaves one out."""
    seed: int = 0


def build_tokenizer() -> Tokenizer:
    """An untrained BPE tokenizer with StarCoder's pipeline."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The transformers tokenizer around a trained one: bos = eos = unk = <|endoftext|>, as StarCoder."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]), clean_up_tokenization_spaces=False,
    )


def save_hf_tokenizer(tokenizer: Tokenizer, out: Path) -> None:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json, readable by transformers 4 and 5."""
    wrap(tokenizer).save_pretrained(str(out))
    # transformers 5 names its own backend class; 4.x knows the same class as PreTrainedTokenizerFast
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    atomic_write_json(out / "tokenizer_config.json", {**config, "tokenizer_class": "PreTrainedTokenizerFast"})
    atomic_write_json(out / "special_tokens_map.json", {
        "bos_token": EOS, "eos_token": EOS, "unk_token": EOS, "additional_special_tokens": list(SPECIAL_TOKENS[1:]),
    })


def train_tokenizer(dataset: str | Path, out_dir: str | Path,
                    config: TokenizerTrainConfig | None = None) -> Path:
    """Train on `dataset`'s shards and save an HF tokenizer directory to `out_dir`."""
    config = config or TokenizerTrainConfig()
    check_out_dir(out_dir, "tokenizer", {"dataset": dataset})
    shards = dataset_shards(dataset)
    check_subset_weights(shards, config.subset_weights)
    totals = language_bytes(shards, config.subset_weights)
    if not totals:
        raise UserError(f"dataset {dataset} has no code to train a tokenizer on (all shards are empty)")
    keep = language_targets(totals, config.byte_budget, config.language_alpha)
    expected = int(sum(totals[lang] * p for lang, p in keep.items()))
    console.print(f"tokenizer: {len(shards)} shard(s), {sum(totals.values()):,} bytes in {len(totals)} "
                  f"language(s); sampling ~{expected:,} bytes", highlight=False)

    tokenizer = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size, min_frequency=config.min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=console.is_terminal,
    )
    stats = SampleStats()
    with progress_bar() as progress:
        task = progress.add_task("reading code", total=expected)

        def documents():
            for text in sample_documents(shards, keep, config.seed, stats, config.max_document_bytes,
                                         config.subset_weights):
                progress.update(task, completed=stats.bytes)
                yield text

        tokenizer.train_from_iterator(documents(), trainer=trainer)
    if stats.documents == 0:
        raise UserError(f"dataset {dataset}: no document was sampled (byte_budget={config.byte_budget})")
    _check_special_ids(tokenizer)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_hf_tokenizer(tokenizer, out)
    write_manifest(out, "tokenizer", config, seed=config.seed, inputs={"dataset": dataset}, extra={
        "vocab_size": tokenizer.get_vocab_size(),
        "documents": stats.documents,
        "bytes": stats.bytes,
        "bytes_by_language": dict(stats.bytes_by_language.most_common()),
    })
    load_tokenizer(out)                                          # what we saved must load
    console.print(f"tokenizer: {tokenizer.get_vocab_size():,} tokens from {stats.documents:,} documents "
                  f"({stats.bytes:,} bytes) → {out}", highlight=False)
    return out


def _check_special_ids(tokenizer: Tokenizer) -> None:
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != expected_id:
            raise ConfigError(f"special token {token} got id {tokenizer.token_to_id(token)}, expected {expected_id}")

"""Dedup settings. Defaults are BigCode's (bigcode-dataset `near_deduplication/`, The Stack v2)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from codefoundry.config import StageConfig


class NearDedupOverride(StageConfig):
    """Per-language changes to the near-dedup parameters (unset fields keep the global value)."""

    ngram_size: int | None = Field(None, ge=1)
    num_perm: int | None = Field(None, ge=2)
    threshold: float | None = Field(None, gt=0, lt=1)
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    false_positive_weight: float | None = Field(None, gt=0, lt=1)


def _language_defaults() -> dict[str, NearDedupOverride]:
    # bigcode-dataset visual_inspection.csv near-dedup columns: Mathematica .nb 3-grams, SAS threshold 0.6
    return {"Mathematica": NearDedupOverride(ngram_size=3), "SAS": NearDedupOverride(threshold=0.6)}


class NearDedupConfig(StageConfig):
    """MinHash LSH near-deduplication (bigcode-dataset `minhash_deduplication.py`)."""

    enabled: bool = True
    ngram_size: int = Field(5, ge=1)             # bigcode-dataset: 5-token shingles
    num_perm: int = Field(256, ge=2)             # bigcode-dataset: 256 permutations
    threshold: float = Field(0.7, gt=0, lt=1)    # bigcode-dataset: Jaccard 0.7
    bands: int | None = Field(None, ge=1)        # None: optimal_param(threshold, num_perm, fp weight)
    rows: int | None = Field(None, ge=1)         # None: optimal_param → 25×10 at 0.7/256, weights 0.5/0.5
    false_positive_weight: float | None = Field(None, gt=0, lt=1)
    """Weight of false positives in the bands/rows optimisation (false negatives get 1 − it). None: 0.5 as
    bigcode-dataset without `verify` (→ 25×10), 0.05 with it (→ 36×7: verification removes the false positives,
    so the S-curve leans to recall)."""
    min_tokens: int = Field(5, ge=1)             # bigcode-dataset min_ngram_size: fewer tokens → not near-deduped
    method: Literal["one_permutation", "permutations"] = "one_permutation"
    """How the num_perm values are computed: one hash per shingle binned with optimal densification (fast,
    O(shingles)), or num_perm multiply-add permutations as datasketch/bigcode do (O(shingles × num_perm))."""
    seed: int = 42                               # bigcode-dataset seed
    verify: bool = True
    """Check the exact Jaccard of candidate pairs and keep only edges ≥ threshold (each document's shingle set is
    written in the map phase). False: BigCode's unverified LSH (25×10 at 0.7: F1 ≈ 0.85 on our labelled set)."""
    num_partitions: int = Field(16, ge=1)        # band buckets are hash-partitioned into this many reduce tasks
    languages: dict[str, NearDedupOverride] = Field(default_factory=_language_defaults)
    """Per-language overrides, keyed by The Stack's language name. A language with overrides is deduplicated
    only against files of the same parameters."""


class ExactDedupConfig(StageConfig):
    """Exact dedup by content (git blob sha1), keeping the best copy by The Stack v2's ranking."""

    enabled: bool = True
    num_partitions: int = Field(16, ge=1)


class DedupConfig(StageConfig):
    exact: ExactDedupConfig = ExactDedupConfig()
    near: NearDedupConfig = NearDedupConfig()

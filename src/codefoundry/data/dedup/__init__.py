"""Deduplication steps: exact (content hash) and near (MinHash LSH), both keeping The Stack v2's best copy.

Public API:
    ExactDedup(config), NearDedup(config)     global steps for `codefoundry data curate`
    DedupConfig, ExactDedupConfig, NearDedupConfig, NearDedupOverride
    run_global_step(step, tables, scratch)    the same step over in-memory Arrow tables
    signatures, shingle_sets, jaccard, optimal_param   the MinHash primitives
"""

from codefoundry.data.dedup.config import DedupConfig
from codefoundry.data.dedup.exact import ExactDedup, ExactDedupConfig
from codefoundry.data.dedup.minhash import jaccard, optimal_param, shingle_sets, signatures
from codefoundry.data.dedup.near import LshParams, NearDedup, NearDedupConfig, NearDedupOverride
from codefoundry.data.dedup.run import run_global_step

__all__ = [
    "DedupConfig",
    "ExactDedup",
    "ExactDedupConfig",
    "LshParams",
    "NearDedup",
    "NearDedupConfig",
    "NearDedupOverride",
    "jaccard",
    "optimal_param",
    "run_global_step",
    "shingle_sets",
    "signatures",
]

"""Near dedup on real files: MinHash parameters, the partitioned shuffle, ranking, quality on controlled edits."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from codefoundry.data.dedup import NearDedup, NearDedupConfig, optimal_param, run_global_step, shingle_sets, signatures
from codefoundry.data.dedup.components import components
from codefoundry.data.dedup.minhash import jaccard, shingle_hashes
from codefoundry.data.pipeline import from_records
from conftest import stdlib_files
from labelled.near_duplicates import build_quality_set, delete_lines, rename, score

NON_ALPHA = re.compile(r"[^A-Za-z_0-9]")  # bigcode-dataset minhash_deduplication.py


def real_texts(*names: str) -> list[str]:
    return list(stdlib_files(*names).values())


def test_optimal_param_matches_bigcode_values() -> None:
    assert optimal_param(0.7, 256) == (25, 10)
    assert optimal_param(0.85, 256) == (13, 19)
    assert optimal_param(0.8, 256) == (17, 15)


def test_shingles_are_bigcode_token_5grams() -> None:
    for text in real_texts("textwrap.py", "shlex.py", "heapq.py"):
        tokens = [t for t in NON_ALPHA.split(text) if t]
        reference = {" ".join(tokens[i:i + 5]) for i in range(len(tokens) - 4)}
        hashes, _ = shingle_hashes([text], 5)
        assert len(hashes) == len(tokens) - 4
        assert len(np.unique(hashes)) == len(reference)
    assert len(shingle_hashes(["only four tokens here"], 5)[0]) == 0


@pytest.mark.parametrize("method", ["one_permutation", "permutations"])
def test_signature_agreement_estimates_jaccard(method: str) -> None:
    base = real_texts("textwrap.py")[0]
    rng = random.Random(1)
    variants = [base, rename(base, 0.05, rng), delete_lines(base, 0.15, rng), real_texts("shlex.py")[0]]
    sig, has = signatures(variants, 5, 256, method=method)
    assert has.all()
    sets = shingle_sets(variants, 5)
    for j in range(1, 4):
        true = jaccard(sets[0], sets[j])
        est = float((sig[0] == sig[j]).mean())
        assert abs(est - true) < 0.1, (method, j, true, est)
    # signatures do not depend on the batch a document is in
    alone, _ = signatures(variants[1:2], 5, 256, method=method)
    assert np.array_equal(alone[0], sig[1])


def test_components_merge_chains() -> None:
    nodes, labels = components(np.array([5, 7, 1, 9]), np.array([7, 9, 2, 11]))
    assert dict(zip(nodes.tolist(), labels.tolist(), strict=True)) == {1: 1, 2: 1, 5: 5, 7: 5, 9: 5, 11: 5}


def _rows(texts: list[str], **cols: list) -> pa.Table:
    n = len(texts)
    base = {"lang": ["Python"] * n, "license_type": ["permissive"] * n, "stars": [None] * n, "forks": [None] * n,
            "repo_name": [f"r/{i}" for i in range(n)], "path": [f"f{i}.py" for i in range(n)]}
    base.update(cols)
    return from_records([{"content": t, **{k: v[i] for k, v in base.items()}} for i, t in enumerate(texts)])


def test_near_dedup_keeps_best_ranked_copy_across_units(tmp_path: Path) -> None:
    base, other = real_texts("textwrap.py", "shlex.py")
    edited = rename(base, 0.03, random.Random(0))
    # unit 0: a no_license copy and an unrelated file; unit 1: the permissive, starred copy
    units = [_rows([base, other], license_type=["no_license", "permissive"], stars=[500, 1]),
             _rows([edited], license_type=["permissive"], stars=[3], repo_name=["best/repo"])]
    results = run_global_step(NearDedup(NearDedupConfig(num_partitions=4)), units, tmp_path)
    assert results[0].removed.column("content").to_pylist() == [base]
    assert results[0].removed.column("reason").to_pylist() == ["near_dedup"]
    assert results[0].kept.column("content").to_pylist() == [other]
    assert results[1].kept.column("repo_name").to_pylist() == ["best/repo"]
    # the shuffle is on disk, partitioned: one reduce output per partition
    assert len(list((tmp_path / "reduce").glob("edges-*.npy"))) == 4


def test_stars_then_forks_decide_between_equal_licenses(tmp_path: Path) -> None:
    base = real_texts("heapq.py")[0]
    copy = base.replace("heap", "hp", 3)
    units = [_rows([base, copy], stars=[10, 10], forks=[1, 7])]
    kept = run_global_step(NearDedup(), units, tmp_path)[0].kept
    assert kept.column("forks").to_pylist() == [7]


def test_per_language_override_separates_groups(tmp_path: Path) -> None:
    base = real_texts("bisect.py")[0]
    units = [_rows([base, base + "\n# x\n"], lang=["Python", "SAS"])]
    results = run_global_step(NearDedup(), units, tmp_path)
    assert results[0].kept.num_rows == 2  # SAS has its own parameters, never clustered with Python


def test_unverified_bigcode_mode_still_finds_close_copies(tmp_path: Path) -> None:
    base = real_texts("fnmatch.py")[0]
    units = [_rows([base, base.replace("    ", "  ")])]  # reformatting only: identical tokens
    results = run_global_step(NearDedup(NearDedupConfig(verify=False, method="permutations")), units, tmp_path)
    assert results[0].kept.num_rows == 1


def test_quality_on_labelled_pairs(tmp_path: Path) -> None:
    q = build_quality_set(n_edited=120, seed=3)
    edited = [p for p in q.pairs if p.kind == "edited"]
    assert len(edited) == 120 and q.share_in(0.6, 0.8) >= 0.4
    assert any(p.kind == "licence" and not p.duplicate for p in q.pairs)
    unit = 200
    units = [_rows(q.docs[i:i + unit]) for i in range(0, len(q.docs), unit)]
    step = NearDedup()
    run_global_step(step, units, tmp_path)
    from codefoundry.data.dedup.near import clusters

    nodes, labels = clusters(tmp_path)
    label = {(n >> 32) * unit + (n & 0xFFFFFFFF): lab for n, lab in zip(nodes.tolist(), labels.tolist(), strict=True)}
    s = score(q.pairs, lambda a, b: a in label and label.get(a) == label.get(b))
    assert s.f1 >= 0.95, s


def test_bounded_memory_settings_give_the_same_removals(tmp_path: Path) -> None:
    """One unit's shingle sets at a time in a reduce, and many small partitions: the same rows leave."""
    from codefoundry.data.dedup.near import SetStore

    texts = real_texts("textwrap.py", "shlex.py", "heapq.py", "bisect.py", "fnmatch.py")
    rng = random.Random(1)
    units = [_rows([rename(t, 0.02, rng) for t in texts[i % 5:] + texts[:i % 5]][:3]) for i in range(6)]
    removed = []
    for name, config in (("default", NearDedupConfig()),
                         ("bounded", NearDedupConfig(num_partitions=37, verify_cache_units=1))):
        results = run_global_step(NearDedup(config), units, tmp_path / name)
        removed.append([r.removed.column("content").to_pylist() for r in results])
    assert removed[0] == removed[1] and sum(map(len, removed[0])) >= 5
    store = SetStore(tmp_path / "bounded", max_units=2)
    for unit in (0, 1, 2, 0):
        store.get(unit << 32)
    assert list(store._units) == [2, 0]  # least recently used left first


def test_a_filter_reads_only_its_units_ids(tmp_path: Path) -> None:
    from codefoundry.data.dedup.partitions import open_ids, save, unit_ids

    ids = np.array(sorted([(0 << 32) + 5, (1 << 32) + 2, (1 << 32) + 9, (3 << 32) + 1]), dtype=np.int64)
    save(tmp_path / "a.npy", ids[:2])
    save(tmp_path / "b.npy", ids[2:])
    arrays = open_ids([tmp_path / "a.npy", tmp_path / "b.npy"])
    assert unit_ids(arrays, 1).tolist() == [(1 << 32) + 2, (1 << 32) + 9]
    assert unit_ids(arrays, 2).tolist() == []

"""Membership answers ("was this code in the training data?"): the Bloom index against an exact scan.

A dataset of real code (the first half of this Python's stdlib modules, one row per file, The
Stack's columns) gets its membership index (`codefoundry.data.contains.build_contains_index`,
what curation builds). Queries are snippets of 300 characters: members (from the indexed files,
at random offsets) and non-members (from the other half). Two exact answers to compare with:
the same n-grams in a Python set instead of the Bloom filter (the filter's own errors: misses
must be 0), and a scan of the normalised corpus for the whole normalised snippet (what a user
means by "in the data"; the index also finds partial overlaps, e.g. boilerplate shared between
files, which the scan does not count). Printed: verdicts against both, the index's size beside
the corpus's, and query time per snippet, index vs scan (ratio).

    .venv/bin/python bench/provenance.py [--files 400] [--queries 300]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from codefoundry.data.contains import NGRAM, STRIDE, build_contains_index, contains, load_bloom, normalize, run_lengths

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "provenance"
SNIPPET = 300


def stdlib_texts(limit: int) -> list[tuple[str, str]]:
    stdlib = Path(os.__file__).parent
    out = []
    for path in sorted(stdlib.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if len(text) > 2 * SNIPPET:
            out.append((path.name, text))
        if len(out) >= limit:
            break
    return out


def exact_set_found(norm: str, stored: set[str]) -> bool:
    """The index's rule (a run of two stored n-grams 50 characters apart) with exact n-gram membership."""
    hits = np.array([norm[i:i + NGRAM] in stored for i in range(len(norm) - NGRAM + 1)], dtype=bool)
    return any((run_lengths(hits[r::NGRAM]) >= 2).any() for r in range(min(NGRAM, len(hits))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    texts = stdlib_texts(args.files)
    members, others = texts[: len(texts) // 2], texts[len(texts) // 2:]
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "data" / "files").mkdir(parents=True)
    rows = [{"content": t, "repo_name": "python/cpython", "path": f"Lib/{n}", "lang": "Python"} for n, t in members]
    pq.write_table(pa.Table.from_pylist(rows), WORK / "data" / "files" / "train-00000-of-00001.parquet")
    start = time.perf_counter()
    build_contains_index(WORK)
    build_s = time.perf_counter() - start
    bloom = load_bloom(WORK)
    corpus = "\n".join(normalize(t) for _, t in members)

    rng = random.Random(0)
    queries = []
    for source, label in ((members, True), (others, False)):
        for _ in range(args.queries // 2):
            _, text = rng.choice(source)
            at = rng.randrange(0, len(text) - SNIPPET)
            queries.append((text[at:at + SNIPPET], label))

    start = time.perf_counter()
    found = [contains(WORK, q, bloom).found for q, _ in queries]
    index_s = (time.perf_counter() - start) / len(queries)
    start = time.perf_counter()
    exact = [normalize(q) in corpus for q, _ in queries]
    scan_s = (time.perf_counter() - start) / len(queries)
    stored = {n[i:i + NGRAM] for _, t in members for n in [normalize(t)]
              for i in range(0, len(n) - NGRAM + 1, STRIDE)}
    same_grams = [exact_set_found(normalize(q), stored) for q, _ in queries]

    misses = sum(e and not f for f, e in zip(found, exact, strict=True))
    false_pos = sum(f and not e for f, e in zip(found, exact, strict=True))
    set_misses = sum(e and not f for f, e in zip(found, same_grams, strict=True))
    set_false = sum(f and not e for f, e in zip(found, same_grams, strict=True))
    index_bytes = sum(p.stat().st_size for p in (WORK / "index").iterdir())
    print(f"corpus: {len(members)} files, {len(corpus):,} normalised characters; {len(others)} held-out files")
    print(f"index: {index_bytes:,} bytes ({index_bytes / len(corpus):.2f} bytes per corpus character), "
          f"built in {build_s:.2f} s")
    print(f"queries: {len(queries)} snippets of {SNIPPET} characters, {sum(exact)} in the corpus (exact scan)")
    print(f"index vs the same n-grams in a set: {set_misses} misses, {set_false} false positives "
          f"({sum(same_grams)} found by the set)")
    print(f"index vs the whole-snippet scan: {misses} misses (snippets too short for an aligned chain), "
          f"{false_pos} found only in part (shared text)")
    print(f"per query: index {index_s * 1e3:.2f} ms, exact scan {scan_s * 1e3:.2f} ms "
          f"(scan/index {scan_s / index_s:.1f}×; the scan needs the whole text, the index {index_bytes:,} bytes)")


if __name__ == "__main__":
    main()

"""Search index benchmark: build time and query latency of `data search`'s SQLite FTS5 index at 1M rows.

    .venv/bin/python bench/search.py [--rows 1000000]

Rows are slices of real stdlib/site-packages files (≈ 400 bytes each: a realistic snippet per
row; whole files at 1M rows would not fit this machine's disk budget), written as a dataset's
`data/files/*.parquet` shards, indexed by `codefoundry.data.search.build_search_index` — the
code curate runs. The anchor is a linear scan of the same rows (DuckDB `ILIKE`, what a user
would do without an index) in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from codefoundry.data.pipeline import conform
from codefoundry.data.search import build_search_index, search

QUERIES = ["def __init__", "import os", "thread pool executor", '"return None"', "unicode decode error",
           "parse arguments", "socket timeout", "json dumps", "regular expression", "lru_cache"]
ROW_CHARS = 400


def make_dataset(root: Path, rows: int) -> Path:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    texts = []
    for f in files:
        try:
            texts.append((f.name, f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue
    out = root / "data" / "files"
    out.mkdir(parents=True)
    shard, n, k = [], 0, 0
    while n < rows:
        name, text = texts[k % len(texts)]
        for i in range(0, max(1, len(text) - ROW_CHARS), ROW_CHARS):
            shard.append((f"owner{k % 5000}/repo{k % 997}", f"{name}:{i}", text[i:i + ROW_CHARS]))
            n += 1
            if len(shard) == 100_000 or n == rows:
                repo, path, content = zip(*shard, strict=True)
                t = pa.table({"repo_name": list(repo), "path": list(path), "content": list(content),
                              "lang": ["Python"] * len(shard),
                              "licenses": pa.array([["PSF-2.0"]] * len(shard), pa.list_(pa.string()))})
                pq.write_table(conform(t), out / f"train-{len(list(out.iterdir())):05d}.parquet")
                shard = []
            if n == rows:
                break
        k += 1
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cf-bench-search-"))
    try:
        make_dataset(root, args.rows)
        t = time.perf_counter()
        index = build_search_index(root)
        build = time.perf_counter() - t
        lat = []
        for q in QUERIES:
            t = time.perf_counter()
            hits = search(root, q, limit=10)
            lat.append((time.perf_counter() - t) * 1000)
            assert hits, q
        import duckdb

        scan = []
        for q in QUERIES[:3]:
            t = time.perf_counter()
            duckdb.sql(f"SELECT repo_name, path FROM '{root}/data/files/*.parquet' WHERE content ILIKE "
                       f"'%{q.strip(chr(34))}%' LIMIT 10").fetchall()
            scan.append((time.perf_counter() - t) * 1000)
        print(f"{args.rows:,} rows (≈{ROW_CHARS} chars each); index {index.stat().st_size / 1e6:.0f} MB built in "
              f"{build:.1f}s ({args.rows / build:,.0f} rows/s)")
        print(f"FTS5 query latency over {len(QUERIES)} queries: median {statistics.median(lat):.1f} ms, "
              f"max {max(lat):.1f} ms (top 10 by bm25, with snippets)")
        print(f"DuckDB ILIKE scan (no index), 3 queries: median {statistics.median(scan):.1f} ms "
              f"→ FTS5 {statistics.median(scan) / statistics.median(lat):.1f}× faster per query")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The shared `tiny_dataset` fixture is what its docstring promises."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq


def test_tiny_dataset_keeps_permissive_languages_and_removes_the_rest(tiny_dataset: Path) -> None:
    kept = pq.read_table(tiny_dataset / "data" / "files").to_pylist()
    repos = {r["repo_name"] for r in kept}
    assert repos == {"acme/mit-tools", "apache-folk/apache-lib", "bsd-people/bsd-utils"}
    assert {r["lang"] for r in kept} >= {"Python", "C", "Go", "JavaScript", "Shell", "Markdown"}
    licenses = {r["repo_name"]: r["licenses"] for r in kept}
    assert licenses == {"acme/mit-tools": ["MIT"], "apache-folk/apache-lib": ["Apache-2.0"],
                        "bsd-people/bsd-utils": ["BSD-3-Clause"]}
    removed = {r["path"]: r["reason"] for r in pq.read_table(tiny_dataset / "removed" / "files").to_pylist()}
    assert removed["node_modules/noop/index.js"] == "vendored"
    assert removed["proto/msg_pb2.py"] == "generated"
    assert removed["sched.py"] == "license:gpl-3.0"
    assert removed["graphlib.py"] == "license:no_license"
    stats = json.loads((tiny_dataset / "stats.json").read_text())
    assert stats["subsets"]["files"]["totals"]["kept_files"] == len(kept)

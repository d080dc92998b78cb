"""`stats.json`: what a curation run kept and removed, and why. Owned here; later steps add to it.

Schema (version 1). Every leaf is an integer count, so per-unit stats merge by adding:

    {"schema_version": 1,
     "subsets": {
       "files": {                                      # one entry per subset (files, notebooks, …)
         "totals":        {COUNTS},
         "removed":       {"<reason>": {"files": n, "bytes": n}},
         "languages":     {"<lang or 'unknown'>": {COUNTS, "removed": {"<reason>": files}}},
         "licenses":      {"<SPDX id or 'none'>": {COUNTS}},   # a file counts once per license
         "license_types": {"permissive|no_license|non_permissive": {COUNTS}},
         "steps":         {"<step name>": {"rows_in": n, "kept": n, "removed": {"<reason>": n},
                                           "counters": {"<key>": n}}}}}}

    COUNTS = {"files", "bytes", "kept_files", "kept_bytes", "removed_files", "removed_bytes"}

`files`/`bytes` count every file seen (kept + removed); bytes are raw file sizes. A later
step (dedup, PII, …) reports under `steps.<its name>`; a later subset adds `subsets.<name>`.
Floats and timings are kept out on purpose: same input → same bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = 1
COUNT_KEYS = ("files", "bytes", "kept_files", "kept_bytes", "removed_files", "removed_bytes")


def merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Add two stats trees: mappings merge key by key, numbers add."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, Mapping):
            out[key] = merge(out[key], value)
        elif key == "schema_version":
            out[key] = value
        else:
            out[key] = out[key] + value
    return out


def merge_all(trees: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in trees:
        out = merge(out, t)
    return sort_tree(out)


def sort_tree(tree: Any) -> Any:
    return {k: sort_tree(tree[k]) for k in sorted(tree)} if isinstance(tree, Mapping) else tree


def _add(node: dict[str, Any], kind: str, files: int, nbytes: int) -> None:
    for key in COUNT_KEYS:
        node.setdefault(key, 0)
    node["files"] += files
    node["bytes"] += nbytes
    node[f"{kind}_files"] += files
    node[f"{kind}_bytes"] += nbytes


def _group_sizes(table: pa.Table, column: str, fill: str) -> list[tuple[str, int, int]]:
    """(key, rows, summed size) per distinct value of `column` (nulls as `fill`). Counted in Python: a run's
    tables are per unit and small, where an Arrow group-by costs ~1 ms to set up each time."""
    if table.num_rows == 0:
        return []
    groups: dict[str, list[int]] = {}
    for key, size in zip(table.column(column).to_pylist(), table.column("size").to_pylist(), strict=True):
        group = groups.get(fill if key is None else key)
        if group is None:
            groups[fill if key is None else key] = [1, size or 0]
        else:
            group[0] += 1
            group[1] += size or 0
    return [(key, n, b) for key, (n, b) in groups.items()]


def _license_sizes(table: pa.Table) -> list[tuple[str, int, int]]:
    if table.num_rows == 0:
        return []
    lic = table.column("licenses")
    lengths = pc.fill_null(pc.list_value_length(lic), 0)
    none = table.filter(pc.equal(lengths, 0))
    flat = pa.table({"k": pc.list_flatten(lic), "size": pc.list_parent_indices(lic)})
    sizes = pc.fill_null(table.column("size"), 0).combine_chunks()
    flat = pa.table({"k": flat["k"], "size": pc.take(sizes, flat["size"])})
    out = _group_sizes(flat, "k", "none")
    if none.num_rows:
        out.append(("none", none.num_rows, int(pc.sum(none.column("size")).as_py() or 0)))
    return out


def count_files(kept: pa.Table, removed: pa.Table, steps: Mapping[str, Any] | None = None,
                subset: str = "files") -> dict[str, Any]:
    """Stats tree for one unit's kept rows and removed rows (which carry `reason`)."""
    s: dict[str, Any] = {"totals": {}, "removed": {}, "languages": {}, "licenses": {}, "license_types": {}}
    for kind, table in (("kept", kept), ("removed", removed)):
        _add(s["totals"], kind, table.num_rows, int(pc.sum(table.column("size")).as_py() or 0) if table.num_rows
             else 0)
        for group, column in (("languages", "lang"), ("license_types", "license_type")):
            for key, n, b in _group_sizes(table, column, "unknown"):
                _add(s[group].setdefault(key, {}), kind, n, b)
        for key, n, b in _license_sizes(table):
            _add(s["licenses"].setdefault(key, {}), kind, n, b)
    for reason, n, b in _group_sizes(removed, "reason", "unknown"):
        node = s["removed"].setdefault(reason, {"files": 0, "bytes": 0})
        node["files"] += n
        node["bytes"] += b
    if removed.num_rows:
        pairs = Counter(zip(removed.column("lang").to_pylist(), removed.column("reason").to_pylist(), strict=True))
        for (lang, reason), n in pairs.items():
            if reason is not None:  # as a group-by's count, which counts non-null values
                s["languages"]["unknown" if lang is None else lang].setdefault("removed", {})[reason] = n
    if steps:
        s["steps"] = dict(steps)
    return {"schema_version": SCHEMA_VERSION, "subsets": {subset: s}}

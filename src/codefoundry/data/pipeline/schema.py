"""The record schema: one row per file, with The Stack's columns (plus `reason` for removed rows)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

FILES_SCHEMA = pa.schema([
    pa.field("hexsha", pa.string()),              # git blob sha1 of the raw bytes
    pa.field("size", pa.int64()),                 # bytes of the raw file
    pa.field("ext", pa.string()),                 # extension without the dot ("py"), "" if none
    pa.field("lang", pa.string()),                # language name as in The Stack ("Python", "C#"), null if unknown
    pa.field("repo_name", pa.string()),           # "owner/name" (or the folder / distribution name)
    pa.field("path", pa.string()),                # path inside the repository, "/"-separated
    pa.field("licenses", pa.list_(pa.string())),  # SPDX ids detected for the repository
    pa.field("license_type", pa.string()),        # permissive | no_license | non_permissive (The Stack v2)
    pa.field("stars", pa.int64()),                # null when unknown
    pa.field("forks", pa.int64()),                # null when unknown
    pa.field("content", pa.string()),             # UTF-8 text; null for rows removed before decoding
    pa.field("avg_line_length", pa.float64()),
    pa.field("max_line_length", pa.int64()),
    pa.field("alphanum_fraction", pa.float64()),
])
"""Columns of `data/files/*.parquet` (The Stack v1/v2 per-file columns)."""

REASON = "reason"
REMOVED_SCHEMA = FILES_SCHEMA.append(pa.field(REASON, pa.string()))
"""Columns of `removed/files/*.parquet`: the row as it was when removed, and why (a slug)."""

COLUMNS = tuple(FILES_SCHEMA.names)


def from_records(records: Iterable[Mapping[str, Any]], schema: pa.Schema = FILES_SCHEMA) -> pa.Table:
    """A table from dict records; missing columns are null."""
    rows = list(records)
    return pa.Table.from_pydict({name: [r.get(name) for r in rows] for name in schema.names}, schema=schema)


def with_reason(table: pa.Table, reasons: pa.Array | list[str]) -> pa.Table:
    """`table` (files schema) with a `reason` column appended."""
    files = table.select(list(COLUMNS)) if table.schema.names != list(COLUMNS) else table
    return files.append_column(REASON, pa.array(reasons, pa.string()) if isinstance(reasons, list) else reasons)


def conform(table: pa.Table, schema: pa.Schema = FILES_SCHEMA) -> pa.Table:
    """`table` with exactly `schema`'s columns in order (missing ones null, types cast)."""
    if table.schema.equals(schema, check_metadata=True):  # most tables already are: nothing to rebuild
        return table
    names = set(table.column_names)
    columns = [_cast(table.column(f.name), f.type) if f.name in names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _cast(column: pa.ChunkedArray, type_: pa.DataType) -> pa.ChunkedArray:
    """`column.cast(type_)`, skipped when it already has that type (a cast to its own type changes nothing)."""
    return column if column.type == type_ else column.cast(type_)

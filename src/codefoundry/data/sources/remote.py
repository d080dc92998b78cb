"""Table sources behind an fsspec URL (`s3://bucket/stack.parquet`, `memory://rows.jsonl`, `gs://…`).

The same rows and units as a local JSONL or Parquet file (`tables.py`): a unit is a range of
rows, and each worker (a local process or a Ray task on another node) reads its own range from
the URL, so no machine copies the whole input. Plain JSONL only (no `.gz`: a gzip stream cannot
be entered at a byte offset); `file://` URLs are plain local paths.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from codefoundry.data.pipeline import REMOVED_SCHEMA, from_records
from codefoundry.data.pipeline.storage import filesystem
from codefoundry.data.sources.tables import _check_columns, _row, _rows_from_table, jsonl_unit_offsets
from codefoundry.data.sources.unit import ReadOptions
from codefoundry.errors import UserError


def is_remote_table(url: str) -> bool:
    return url.lower().endswith((".jsonl", ".ndjson", ".parquet"))


@dataclass(frozen=True)
class RemoteTableChunk:
    """Rows [start, stop) of a JSONL (bytes [byte_start, byte_stop)) or Parquet file at an fsspec URL."""

    url: str
    kind: str  # "jsonl" | "parquet"
    start: int
    stop: int
    options: ReadOptions
    byte_start: int = 0
    byte_stop: int = 0

    def describe(self) -> str:
        return f"{self.kind} {self.url} rows {self.start}-{self.stop}"

    def read(self) -> Iterator[pa.Table]:
        fs, path = filesystem(self.url)
        if self.kind == "parquet":
            with fs.open(path, "rb") as f:
                table = pq.read_table(f).slice(self.start, self.stop - self.start)
            rows = _rows_from_table(table, self.options)
            for start in range(0, rows.num_rows, self.options.batch_rows):
                yield rows.slice(start, self.options.batch_rows)
            return
        with fs.open(path, "rb") as f:
            f.seek(self.byte_start)
            data = f.read(self.byte_stop - self.byte_start)
        try:
            table = pajson.read_json(io.BytesIO(data), read_options=pajson.ReadOptions(block_size=len(data) + 1))
            rows = _rows_from_table(table, self.options)
            for start in range(0, rows.num_rows, self.options.batch_rows):
                yield rows.slice(start, self.options.batch_rows)
            return
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            yield from self._read_line_by_line(data)    # a malformed line or mixed types: as for a local file

    def _read_line_by_line(self, data: bytes) -> Iterator[pa.Table]:
        records = []
        for i, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), self.start):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            records.append(_row(obj, self.options) if isinstance(obj, dict) else
                           {"path": f"line {i + 1}", "repo_name": self.url.rsplit("/", 1)[-1],
                            "reason": "read:bad_json", "licenses": []})
        for start in range(0, len(records), self.options.batch_rows):
            yield from_records(records[start:start + self.options.batch_rows], REMOVED_SCHEMA)


def remote_table_units(url: str, options: ReadOptions) -> list[RemoteTableChunk]:
    """Work units of `table_rows_per_unit` rows for a JSONL or Parquet file at `url`."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        raise UserError(f"source {url} does not exist")
    per_unit = options.limits.table_rows_per_unit
    if url.lower().endswith(".parquet"):
        with fs.open(path, "rb") as f:
            try:
                meta = pq.ParquetFile(f).metadata
            except (pa.ArrowInvalid, OSError) as e:
                raise UserError(f"{url} is not a readable Parquet file: {e}") from None
        _check_columns(meta.schema.names, url)
        n = meta.num_rows
        return [RemoteTableChunk(url, "parquet", s, min(s + per_unit, n), options) for s in range(0, n, per_unit)]
    with fs.open(path, "rb") as f:
        offsets, n = jsonl_unit_offsets(f, per_unit, url)
    return [RemoteTableChunk(url, "jsonl", s, min(s + per_unit, n), options, offsets[k], offsets[k + 1])
            for k, s in enumerate(range(0, n, per_unit))]

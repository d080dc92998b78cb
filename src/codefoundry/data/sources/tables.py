"""Rows that are already files: JSONL, Parquet, and Hugging Face `save_to_disk` directories.

Each row needs `content` and `path`; `repo_name`, `licenses`, `stars`, `forks`, `lang` and
`hexsha` are used when present (The Stack's `max_stars_repo_*` names are accepted too).
A row's `license_type` is decided from its `licenses` (none → no_license). Rows are cut
into work units of `table_rows_per_unit`.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from codefoundry.data.license import license_type
from codefoundry.data.license.spdx import canonical
from codefoundry.data.pipeline import REMOVED_SCHEMA, conform, from_records
from codefoundry.data.sources.unit import ReadOptions
from codefoundry.errors import UserError

ALIASES = {"max_stars_repo_path": "path", "max_stars_repo_name": "repo_name", "max_stars_repo_licenses": "licenses",
           "max_stars_count": "stars", "max_forks_count": "forks", "language": "lang"}
REQUIRED = ("content", "path")


def is_jsonl(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".jsonl", ".jsonl.gz", ".ndjson"))


def is_parquet(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".parquet"


def is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


INT64_MAX = 2**63 - 1


def _licenses(value: Any) -> list[str]:
    """The SPDX ids of a row's `licenses` (a string or a list of them); values of other types are ignored."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return sorted({canonical(_text(x)) for x in items if isinstance(x, str) and x})


def _text(value: Any) -> str | None:
    """A string field as valid UTF-8 (JSON can spell lone surrogates: written as \\xNN), None if not a string."""
    if not isinstance(value, str):
        return None
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "backslashreplace")


def _row(raw: dict[str, Any], opts: ReadOptions) -> dict[str, Any]:
    """One row from a JSON object of any shape: fields of the wrong type are treated as missing."""
    row = {ALIASES.get(k, k): v for k, v in raw.items()}
    licenses = _licenses(row.get("licenses"))
    out: dict[str, Any] = {k: _text(row.get(k)) for k in ("hexsha", "repo_name", "path", "lang")}
    for k in ("stars", "forks"):
        v = row.get(k)
        out[k] = v if isinstance(v, int) and not isinstance(v, bool) and abs(v) <= INT64_MAX else None
    content = row.get("content")
    if not isinstance(content, str) or out["path"] is None:
        out["reason"] = "read:missing_content"
        content = None
    elif len(content.encode("utf-8", "surrogatepass")) > opts.limits.max_file_bytes:
        out["reason"] = "read:too_big"
        content = None
    elif _text(content) != content:
        out["reason"] = "read:invalid_utf8"
        content = None
    return out | {"content": content, "licenses": licenses,
                  "license_type": license_type(licenses, opts.permissive), "repo_name": out["repo_name"] or ""}


def _check_columns(names: list[str], where: Path | str) -> None:
    have = {ALIASES.get(n, n) for n in names}
    missing = [c for c in REQUIRED if c not in have]
    if missing:
        raise UserError(f"{where} has no {' or '.join(missing)} column (columns: {', '.join(names)})",
                        "table sources need at least `content` and `path`")


@dataclass(frozen=True)
class TableChunk:
    """Rows [start, stop) of one table file (JSONL line numbers, or Parquet/Arrow row numbers)."""

    path: Path
    kind: str  # "jsonl" | "parquet" | "arrow"
    start: int
    stop: int
    options: ReadOptions
    byte_start: int | None = None  # JSONL: where line `start` begins (None: read by lines)
    byte_stop: int | None = None

    def describe(self) -> str:
        return f"{self.kind} {self.path} rows {self.start}-{self.stop}"

    def _raw_rows(self) -> Iterator[dict[str, Any] | str]:
        if self.kind == "jsonl":
            opener = gzip.open if self.path.name.endswith(".gz") else open
            with opener(self.path, "rt", encoding="utf-8", errors="replace") as f:
                for i, line in enumerate(f):
                    if i >= self.stop:
                        break
                    if i >= self.start and line.strip():
                        try:
                            obj = json.loads(line)
                        except (json.JSONDecodeError, RecursionError):  # nesting past Python's stack too
                            yield f"line {i + 1}"
                            continue
                        yield obj if isinstance(obj, dict) else f"line {i + 1}"
            return
        yield from self._table().to_pylist()

    def _table(self) -> pa.Table:
        """This chunk's rows of a Parquet/Arrow file; a file corrupt past its footer is a UserError naming it."""
        try:
            table = pq.read_table(self.path) if self.kind == "parquet" else _read_arrow(self.path)
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{self.path} is not a readable {self.kind} file: {e}") from None
        return table.slice(self.start, self.stop - self.start)

    def _arrow(self) -> pa.Table | None:
        """The chunk as one Arrow table, or None when only the row-by-row path can read it."""
        if self.kind in ("parquet", "arrow"):
            return self._table()
        if self.byte_start is None:
            return None
        with open(self.path, "rb") as f:
            f.seek(self.byte_start)
            data = f.read(self.byte_stop - self.byte_start)
        try:
            table = pajson.read_json(io.BytesIO(data), read_options=pajson.ReadOptions(block_size=len(data) + 1))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None  # a malformed line or mixed types: fall back to json.loads per line
        # a unit of only `{}` lines is a table of no columns, whose rows do not survive a rebuild: read per line
        return table if table.num_columns else None

    def read(self) -> Iterator[pa.Table]:
        """The chunk's rows whose path the options select (a subset such as notebooks reads its own)."""
        selecting = bool(self.options.only_suffixes or self.options.skip_suffixes)
        for batch in self._read_rows():
            if selecting and batch.num_rows:
                paths = batch.column("path").to_pylist()
                batch = batch.filter(pa.array([self.options.selects(p or "") for p in paths], pa.bool_()))
            yield batch

    def _read_rows(self) -> Iterator[pa.Table]:
        table = self._arrow()
        if table is not None:
            rows = _rows_from_table(table, self.options)
            for start in range(0, rows.num_rows, self.options.batch_rows):
                yield rows.slice(start, self.options.batch_rows)
            return
        rows: list[dict[str, Any]] = []
        for raw in self._raw_rows():
            if isinstance(raw, str):
                rows.append({"path": raw, "repo_name": self.path.name, "reason": "read:bad_json", "licenses": []})
            else:
                rows.append(_row(raw, self.options))
            if len(rows) >= self.options.batch_rows:
                yield from_records(rows, REMOVED_SCHEMA)
                rows = []
        if rows:
            yield from_records(rows, REMOVED_SCHEMA)


def _rows_from_table(table: pa.Table, opts: ReadOptions) -> pa.Table:
    """Rows of a whole table at once (the fast path of `_row`): REMOVED_SCHEMA, reasons set."""
    source = {name: table.column(name) for name in table.column_names}
    for alias, target in ALIASES.items():  # The Stack's names fill in where ours are missing
        if alias in source:
            other = source.pop(alias)
            try:
                source[target] = pc.coalesce(source[target], other) if target in source else other
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
                source.setdefault(target, other)
    table = pa.table(source)
    n = table.num_rows
    cols: dict[str, pa.Array | pa.ChunkedArray] = {}
    for name in ("hexsha", "repo_name", "path", "lang", "content"):
        if name in table.column_names and pa.types.is_string(table.column(name).type):
            cols[name] = table.column(name)
    for name in ("stars", "forks"):
        if name in table.column_names and pa.types.is_integer(table.column(name).type):
            cols[name] = table.column(name)
    content = cols.get("content", pa.nulls(n, pa.string()))
    missing = pc.or_(pc.is_null(content), pc.is_null(cols.get("path", pa.nulls(n, pa.string()))))
    too_big = pc.greater(pc.fill_null(pc.binary_length(content), 0), opts.limits.max_file_bytes)
    reason = pc.if_else(missing, "read:missing_content", pc.if_else(too_big, "read:too_big", pa.scalar(None,
                                                                                                        pa.string())))
    cols["content"] = pc.if_else(pc.is_null(reason), content, pa.scalar(None, pa.string()))
    cols["repo_name"] = pc.fill_null(cols.get("repo_name", pa.nulls(n, pa.string())), "")
    if "licenses" in table.column_names:
        licenses = [_licenses(v) for v in table.column("licenses").to_pylist()]
    else:
        licenses = [[] for _ in range(n)]
    cols["licenses"] = pa.array(licenses, pa.list_(pa.string()))
    types = {tuple(x): license_type(x, opts.permissive) for x in {tuple(x) for x in licenses}}
    cols["license_type"] = pa.array([types[tuple(x)] for x in licenses], pa.string())
    cols["reason"] = reason
    return conform(pa.table(cols), REMOVED_SCHEMA)


def _read_arrow(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            return pa.ipc.open_file(source).read_all()


def jsonl_unit_offsets(f: BinaryIO, per_unit: int, where: Path | str) -> tuple[list[int], int]:
    """(byte offset of each unit's first line, then the end; number of lines) of the JSONL file `f`, whose
    first line must name The Stack's columns."""
    offsets, n, pos, first = [0], 0, 0, b""
    for line in f:
        if n == 0:
            first = line
        elif n % per_unit == 0:
            offsets.append(pos)
        pos += len(line)
        n += 1
    offsets.append(pos)
    if first.strip():
        try:
            header = json.loads(first)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            header = None
        if not isinstance(header, dict):
            raise UserError(f"{where}: first line is not a JSON object")
        _check_columns(list(header), where)
    return offsets, n


def table_units(path: Path, options: ReadOptions) -> list[TableChunk]:
    """Work units for a JSONL file, a Parquet file or a `save_to_disk` directory."""
    per_unit = options.limits.table_rows_per_unit
    if is_jsonl(path):
        gz = path.name.endswith(".gz")
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            offsets, n = jsonl_unit_offsets(f, per_unit, path)
        if gz:
            return [TableChunk(path, "jsonl", s, min(s + per_unit, n), options) for s in range(0, n, per_unit)]
        return [TableChunk(path, "jsonl", s, min(s + per_unit, n), options, offsets[k], offsets[k + 1])
                for k, s in enumerate(range(0, n, per_unit))]
    if is_parquet(path):
        try:
            meta = pq.ParquetFile(path).metadata
        except (pa.ArrowInvalid, OSError) as e:
            raise UserError(f"{path} is not a readable Parquet file: {e}") from None
        _check_columns(meta.schema.names, path)
        spans, kind = [(path, meta.num_rows)], "parquet"
    else:
        try:
            state = json.loads((path / "state.json").read_text(encoding="utf-8"))
            files = [path / f["filename"] for f in state.get("_data_files", [])]
        except (ValueError, RecursionError, TypeError, KeyError, AttributeError) as e:
            raise UserError(f"{path / 'state.json'} is not a `save_to_disk` state file: {e!r}") from None
        spans = []
        for f in files:
            try:
                table = _read_arrow(f)
            except (pa.ArrowException, OSError) as e:
                raise UserError(f"{f} is not a readable Arrow file: {e}") from None
            _check_columns(table.column_names, f)
            spans.append((f, table.num_rows))
        kind = "arrow"
    return [TableChunk(f, kind, start, min(start + per_unit, n), options)
            for f, n in spans for start in range(0, n, per_unit)]

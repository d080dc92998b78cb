"""The executor's cheap paths give what the plain ones give: splitting a batch by reasons, conforming a table to a
schema, merging a unit's markers, counting stats over staged files however their rows are chunked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_data_pipeline import ExactDedup, NoTabs, Unit

from codefoundry.data import Annotate
from codefoundry.data.pipeline import FILES_SCHEMA, REMOVED_SCHEMA, LocalExecutor, StepStats, from_records
from codefoundry.data.pipeline.executor import _write_arrow, finished_unit, gather_stats, read_unit, unit_outputs
from codefoundry.data.pipeline.schema import COLUMNS, conform, with_reason
from codefoundry.data.pipeline.stats import count_files, merge_all
from codefoundry.data.pipeline.step import split

TEXTS = ["", "x = 1\n", "a\r\nb\r\n", "naïve = 'café'\n", "\t\n", "😀" * 3, "z" * 2048, "\r\n", "ß\u2028q"]


def plain_split(batch: pa.Table, reasons: Sequence[str | None] | pa.Array) -> tuple[pa.Table, pa.Table]:
    """The split before its fast paths: always through an Arrow array of reasons."""
    arr = reasons if isinstance(reasons, pa.Array) else pa.array(list(reasons), pa.string())
    if arr.null_count == len(arr):
        return batch, REMOVED_SCHEMA.empty_table()
    keep = pc.is_null(arr)
    removed = batch.filter(pc.invert(keep))
    return batch.filter(keep), with_reason(removed.select(list(COLUMNS)), arr.filter(pc.invert(keep)))


def batch_of(n: int, chunks: int = 1) -> pa.Table:
    rows = [{"path": f"d/{i}.py", "content": TEXTS[i % len(TEXTS)], "size": len(TEXTS[i % len(TEXTS)].encode())}
            for i in range(n)]
    table = Annotate()(from_records(rows)).kept
    if chunks == 1 or n < chunks:
        return table
    step = -(-n // chunks)
    return pa.concat_tables([table.slice(start, step) for start in range(0, n, step)])


def reason_lists(n: int) -> list[list[str | None]]:
    return [[None] * n,  # nothing removed: the fast path
            ["basic:max_line_length"] * n,  # everything removed
            [None if i % 3 else "no_tabs:tab" for i in range(n)],
            [None] * (n - 1) + ["size:large"] if n else [],  # the last row only
            ["" if i == 0 else None for i in range(n)],  # an empty reason still removes
            [None if i % 2 else "naïve:ünïcode" for i in range(n)]]


@pytest.mark.parametrize("n", [0, 1, 2, 7, 2048, 2049])
@pytest.mark.parametrize("chunks", [1, 3])
def test_split_equals_the_plain_split(n: int, chunks: int) -> None:
    batch = batch_of(n, chunks)
    for reasons in reason_lists(n):
        want = plain_split(batch, reasons)
        for given in (reasons, tuple(reasons), pa.array(reasons, pa.string())):
            kept, removed = split(batch, given)
            for got, expected in ((kept, want[0]), (removed, want[1])):
                assert got.schema == expected.schema
                assert got.equals(expected)
                if got.num_rows:  # no rows: no chunk, or one empty chunk per column
                    assert [c.num_chunks for c in got.columns] == [c.num_chunks for c in expected.columns]


def test_too_few_reasons_give_what_the_plain_split_gives() -> None:
    batch = batch_of(4)
    assert split(batch, [None] * 3).kept.equals(plain_split(batch, [None] * 3)[0])
    with pytest.raises(pa.ArrowInvalid):
        plain_split(batch, ["x", None, None])
    with pytest.raises(pa.ArrowInvalid):
        split(batch, ["x", None, None])


def plain_conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    names = set(table.column_names)
    columns = [table.column(f.name).cast(f.type) if f.name in names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def test_conform_equals_the_plain_rebuild() -> None:
    table = batch_of(9, chunks=3)
    with_meta = table.replace_schema_metadata({b"k": b"v"})
    reordered = table.select(list(reversed(table.column_names)))
    narrow = table.select(["path", "content"])
    cast = table.set_column(table.schema.get_field_index("size"), "size", table.column("size").cast(pa.int32()))
    removed = with_reason(table, ["r"] * table.num_rows)
    for given, schema in ((table, FILES_SCHEMA), (with_meta, FILES_SCHEMA), (reordered, FILES_SCHEMA),
                          (narrow, FILES_SCHEMA), (cast, FILES_SCHEMA), (removed, REMOVED_SCHEMA),
                          (removed, FILES_SCHEMA), (FILES_SCHEMA.empty_table(), FILES_SCHEMA)):
        got, want = conform(given, schema), plain_conform(given, schema)
        assert got.equals(want)
        assert got.schema.equals(want.schema, check_metadata=True)
        assert [c.num_chunks for c in got.columns] == [c.num_chunks for c in want.columns]


def test_unit_outputs_merge_markers_as_step_stats_do(tmp_path: Path) -> None:
    units = [Unit("r1", ["a = 1\n", "b\t= 2\n", "", "naïve\r\n"]), Unit("r2", ["a = 1\n", "c = 3\n", "d\t\n"]),
             Unit("r3", [])]
    work = tmp_path / "w"
    plan = LocalExecutor(1, batch_rows=2).run(work, units, [Annotate(), NoTabs(), ExactDedup(), NoTabs()])
    outputs = list(unit_outputs(work, plan, len(units)))
    for i, (kept, removed, steps) in enumerate(outputs):
        want: dict[str, StepStats] = {}
        for p in plan:
            for name, data in finished_unit(work, p.index, f"{i:06d}").marker["steps"].items():
                stats = StepStats.from_json(data)
                if name in want:
                    stats.merge(want[name])
                want[name] = stats
        assert steps == {name: s.to_json() for name, s in want.items()}
        assert (kept, removed) == (finished_unit(work, plan[-1].index, f"{i:06d}").kept,
                                   [f for p in plan for f in finished_unit(work, p.index, f"{i:06d}").removed])
    assert outputs[0][2]["toy_dedup"]["removed"] == {} and outputs[1][2]["toy_dedup"]["removed"] == {
        "toy_dedup:duplicate": 1}


def test_stats_over_staged_files_do_not_depend_on_their_chunks(tmp_path: Path) -> None:
    """gather_stats reads staged files as stored; counting the tables as `read_unit` rebuilds them is the same."""
    outputs = []
    for u, (n, chunks) in enumerate([(5, 1), (9, 3), (0, 1), (2049, 4)]):
        batch = batch_of(n, chunks)
        reasons = [None if i % 4 else "no_tabs:tab" for i in range(n)]
        kept, removed = split(batch, reasons)
        kept_file, removed_file = tmp_path / f"{u}.kept.arrow", tmp_path / f"{u}.removed.arrow"
        _write_arrow(kept_file, iter([kept.slice(0, 3), kept.slice(3)]), FILES_SCHEMA)
        _write_arrow(removed_file, iter([removed]), REMOVED_SCHEMA, skip_empty=True)
        outputs.append((kept_file, [removed_file] if removed_file.exists() else [], {}))
    columns = ["size", "lang", "licenses", "license_type"]
    trees = [count_files(read_unit(k, columns), pa.concat_tables(
        [read_unit(f, [*columns, "reason"]) for f in r] or [REMOVED_SCHEMA.empty_table().select([*columns, "reason"])]),
        {}, "files") for k, r, _ in outputs]
    assert gather_stats(outputs, "files") == merge_all(trees)
    assert gather_stats(outputs, "files")["subsets"]["files"]["totals"]["removed_files"] == 2 + 3 + 513

"""Full-text search over a dataset's kept rows: SQLite FTS5 (standard library, works offline).

The index is built at curate time into `DATASET/index/search.sqlite`: one row per kept row of
every subset (repo, path, language, license, content, subset). `search(dataset, "query")` returns the best
matches (bm25) with a snippet. Queries use FTS5 syntax (`"exact phrase"`, `a OR b`,
`lang:Python`-style column filters as `lang : Python`); text that is not valid FTS5 syntax is
searched as a phrase, as StarCoder Search did with `match_phrase` for quoted queries.

Index format 2 (`PRAGMA user_version` 2) is built with FTS5's pending-terms hash at HASH_BYTES instead of its
1 MB default: the rows are flushed as one segment (or a few for a large dataset) instead of one per megabyte that
automerge then rewrites level by level, about a sixth less CPU for the build, and the file has no free pages
left by those merges. Same tokenizer, columns, rows, rowids and per-row statistics, one segment after the final
'optimize' as before: every query (terms, phrases, prefixes, column filters, bm25, snippets) answers the same
from either format; format 1 (user_version 0) is read as it is.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from codefoundry.errors import ArtifactError, UserError

INDEX = Path("index") / "search.sqlite"
COLUMNS = ["repo_name", "path", "lang", "licenses", "content"]
FORMAT = 2
"""Written as the index's `PRAGMA user_version` (format 1 had none: 0)."""
HASH_BYTES = 64 << 20
"""FTS5 'hashsize' of format 2: pending terms held in memory before they are written as a segment."""


@dataclass(frozen=True)
class Hit:
    repo: str
    path: str
    language: str
    license: str
    snippet: str
    subset: str = "files"


class SearchIndexWriter:
    """Builds `dataset/index/search.sqlite` from batches of kept rows (COLUMNS), in the order they are added."""

    def __init__(self, dataset: Path) -> None:
        self.target = dataset / INDEX
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.target.with_suffix(".tmp")
        self.tmp.unlink(missing_ok=True)
        self.con = sqlite3.connect(self.tmp)
        self.con.execute("PRAGMA journal_mode=OFF")
        self.con.execute("PRAGMA synchronous=OFF")
        self.con.execute(f"PRAGMA user_version={FORMAT}")
        self.con.execute("CREATE VIRTUAL TABLE files USING fts5(repo, path, lang, license, content, subset UNINDEXED, "
                         "tokenize='unicode61')")
        self.con.execute("INSERT INTO files(files, rank) VALUES ('hashsize', ?)", (HASH_BYTES,))

    def add(self, batch: pa.RecordBatch | pa.Table, subset: str) -> None:
        d = batch.select(COLUMNS).to_pydict()
        self.con.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)", zip(
            d["repo_name"], d["path"], [x or "" for x in d["lang"]],
            [" ".join(x or []) for x in d["licenses"]], [x or "" for x in d["content"]],
            [subset] * batch.num_rows, strict=True))

    def close(self) -> Path:
        try:
            self.con.execute("INSERT INTO files(files) VALUES ('optimize')")
            self.con.commit()
        finally:
            self.con.close()
        self.tmp.replace(self.target)
        return self.target

    def abort(self) -> None:
        self.con.close()
        self.tmp.unlink(missing_ok=True)


def build_search_index(dataset: str | Path, batch_rows: int = 2048) -> Path:
    """(Re)build `dataset/index/search.sqlite` from every subset's `data/<subset>/*.parquet`."""
    dataset = Path(dataset)
    writer = SearchIndexWriter(dataset)
    try:
        for shard in subset_shards(dataset):
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=batch_rows, columns=COLUMNS):
                writer.add(batch, shard.parent.name)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def search(dataset: str | Path, query: str, limit: int = 10) -> list[Hit]:
    """The kept files best matching `query` (bm25 order), with a snippet around the match."""
    path = Path(dataset) / INDEX
    if not path.exists():
        raise ArtifactError(f"{dataset} has no search index ({INDEX})",
                            "rebuild the dataset with this version of `codefoundry data curate`")
    if not query.strip():
        raise UserError("the search query is empty")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    sql = ("SELECT repo, path, lang, license, snippet(files, 4, '[', ']', ' … ', 16), subset FROM files "
           "WHERE files MATCH ? ORDER BY bm25(files) LIMIT ?")
    try:
        try:
            rows = con.execute(sql, (query, limit)).fetchall()
        except sqlite3.OperationalError:  # not FTS5 syntax: search the text as one phrase
            rows = con.execute(sql, ('"' + query.replace('"', '""') + '"', limit)).fetchall()
    finally:
        con.close()
    return [Hit(*row) for row in rows]


def subset_shards(dataset: Path, folder: str = "data") -> list[Path]:
    """Every `<folder>/<subset>/*.parquet` of a dataset, files first, then the other subsets by name."""
    return sorted((dataset / folder).glob("*/*.parquet"),
                  key=lambda p: (p.parent.name != "files", p.parent.name, p.name))


@dataclass(frozen=True)
class FileStatus:
    repo: str
    path: str
    language: str
    status: str   # "kept" or the removal reason
    subset: str = "files"


def lookup(dataset: str | Path, user: str | None = None, repo: str | None = None) -> list[FileStatus]:
    """Every row of a user's (or one repository's) repositories in every subset: kept, or why it was removed."""
    import pyarrow.dataset as ds  # here, not at the top: it imports pandas (~0.5 s), which a curation never needs

    if (user is None) == (repo is None):
        raise UserError("give exactly one of --user NAME or --repo OWNER/NAME")
    dataset = Path(dataset)
    if not (dataset / "data" / "files").is_dir():
        raise ArtifactError(f"{dataset} is not a dataset/ artifact (no data/files/)")
    names = pc.utf8_lower(ds.field("repo_name"))
    cond = (names == repo.lower()) if repo else pc.starts_with(names, (user or "").lower() + "/")
    out: list[FileStatus] = []
    for sub, status_col in (("data", None), ("removed", "reason")):
        by_subset: dict[str, list[Path]] = {}
        for shard in subset_shards(dataset, sub):
            by_subset.setdefault(shard.parent.name, []).append(shard)
        for subset, files in by_subset.items():
            cols = ["repo_name", "path", "lang"] + ([status_col] if status_col else [])
            table = ds.dataset(files, format="parquet").to_table(columns=cols, filter=cond)
            d = table.to_pydict()
            for i in range(table.num_rows):
                out.append(FileStatus(d["repo_name"][i], d["path"][i], d["lang"][i] or "",
                                      d[status_col][i] if status_col else "kept", subset))
    return sorted(out, key=lambda f: (f.subset != "files", f.subset, f.repo, f.path, f.status))

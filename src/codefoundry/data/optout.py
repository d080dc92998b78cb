"""Opt-out: remove repositories whose owners asked to be left out (BigCode's `opt-out-v2` process).

A list file has one entry per line (blank lines and `# comments` ignored):
    octocat                 every repository of a user or organisation
    octocat/hello-world     one repository
    acme-*/*  or  */tmp-*   shell globs over `owner/name` (a glob without "/" matches owners)
    https://github.com/octocat/hello-world(.git)   URLs are read as owner/repo
Matching is case-insensitive (GitHub names are). Removed rows get reason `opt_out`.

    codefoundry data curate … --opt-out FILE          during curation
    codefoundry data opt-out DATASET --list FILE --out NEW   on a finished dataset
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from codefoundry.config import StageConfig
from codefoundry.data.pipeline import Filter
from codefoundry.errors import UserError

REASON = "opt_out"
_URL = re.compile(r"^(?:https?://|git@)?(?:www\.)?github\.com[/:]", re.I)


class OptOutConfig(StageConfig):
    """Repositories to leave out (`--opt-out FILE`)."""

    file: Path | None = None
    """A file of entries (owner, owner/repo, globs), one per line."""
    entries: list[str] = Field(default_factory=list)
    """Entries given inline (same syntax as the file's lines)."""


@dataclass(frozen=True)
class OptOutList:
    """Parsed entries and the sha256 of the list they came from."""

    owners: frozenset[str]
    repos: frozenset[str]
    globs: tuple[str, ...]
    sha256: str

    @classmethod
    def parse(cls, text: str) -> OptOutList:
        owners, repos, globs = set(), set(), []
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            line = _URL.sub("", line).removesuffix(".git").strip("/").lower()
            if line.count("/") > 1 or not line or " " in line:
                raise UserError(f"opt-out list line {n}: {raw.strip()!r} is not owner, owner/repo or a glob")
            if any(c in line for c in "*?["):
                globs.append(line)
            elif "/" in line:
                repos.add(line)
            else:
                owners.add(line)
        return cls(frozenset(owners), frozenset(repos), tuple(globs), hashlib.sha256(text.encode()).hexdigest())

    @classmethod
    def from_config(cls, config: OptOutConfig) -> OptOutList:
        text = ""
        if config.file is not None:
            try:
                text = Path(config.file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise UserError(f"cannot read opt-out list {config.file}: {e}") from e
        if config.entries:
            text += "\n" + "\n".join(config.entries)
        return cls.parse(text)

    def __len__(self) -> int:
        return len(self.owners) + len(self.repos) + len(self.globs)

    def matches(self, repo_name: str | None) -> bool:
        if not repo_name:
            return False
        name = repo_name.lower()
        owner = name.split("/", 1)[0]
        if owner in self.owners or name in self.repos:
            return True
        return any(fnmatch.fnmatchcase(name if "/" in g else owner, g) for g in self.globs)


class OptOut(Filter):
    """Remove files of opted-out repositories (reason `opt_out`)."""

    name = "opt_out"
    columns = ("repo_name",)

    def __init__(self, entries: OptOutList) -> None:
        super().__init__()
        self.entries = entries

    def reasons(self, batch: pa.Table) -> Sequence[str | None]:
        names = batch.column("repo_name").to_pylist()
        cache: dict[str | None, str | None] = {}
        out = []
        for name in names:
            if name not in cache:
                cache[name] = REASON if self.entries.matches(name) else None
            out.append(cache[name])
        return out


def opt_out_dataset(dataset: str | Path, list_file: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """A copy of `dataset` without the listed repositories; the list's sha256 goes into the manifest."""
    from codefoundry.atomic import atomic_write_json, atomic_write_text
    from codefoundry.data.card import render_card
    from codefoundry.data.config import CurateConfig
    from codefoundry.data.contains import build_indexes
    from codefoundry.data.pipeline import FILES_SCHEMA, REMOVED_SCHEMA, count_files, merge_all
    from codefoundry.data.pipeline.executor import write_shards
    from codefoundry.manifest import read_manifest, write_manifest

    dataset, out = Path(dataset), Path(out)
    manifest = read_manifest(dataset, kind="dataset")
    entries = OptOutList.from_config(OptOutConfig(file=Path(list_file)))
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} is not empty", "choose a new --out, or pass --overwrite")
        shutil.rmtree(out)
    work = out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    step = OptOut(entries)
    kept_files, removed_files = [], []
    trees: list[dict[str, Any]] = []
    removed_n = 0
    for i, shard in enumerate(sorted((dataset / "data" / "files").glob("*.parquet"))):
        kept, removed = step(pq.read_table(shard))
        removed_n += removed.num_rows
        kept_path, removed_path = work / f"kept-{i:05d}.parquet", work / f"removed-{i:05d}.parquet"
        pq.write_table(kept, kept_path)
        pq.write_table(removed.set_column(removed.schema.get_field_index("content"), "content",
                                          pa.nulls(removed.num_rows, pa.string())), removed_path)
        kept_files.append(kept_path)
        removed_files.append(removed_path)
        trees.append(count_files(kept, removed, {step.name: step.take_stats().to_json()}))
    old_removed = sorted((dataset / "removed" / "files").glob("*.parquet"))
    for f in old_removed:
        t = pq.read_table(f)
        trees.append(count_files(FILES_SCHEMA.empty_table(), t))
    config = CurateConfig.model_validate(manifest.config)
    config = config.model_copy(update={"opt_out": OptOutConfig(file=Path(list_file))})
    write_shards(kept_files, out / "data" / "files", FILES_SCHEMA, config.shard_max_bytes)
    write_shards(old_removed + removed_files, out / "removed" / "files", REMOVED_SCHEMA, config.shard_max_bytes)
    stats = merge_all(trees)
    previous = json.loads((dataset / "stats.json").read_text(encoding="utf-8"))
    steps = previous["subsets"]["files"].get("steps", {})
    stats["subsets"]["files"]["steps"] = {**steps, **stats["subsets"]["files"].get("steps", {})}
    atomic_write_json(out / "stats.json", stats)
    sources = list(manifest.extra.get("sources", []))
    atomic_write_text(out / "card.md", render_card(stats, config, sources))
    build_indexes(out)
    write_manifest(out, "dataset", config, inputs={"dataset": dataset},
                   extra={**manifest.extra, "opt_out_sha256": entries.sha256, "opt_out_entries": len(entries)})
    shutil.rmtree(work)
    from codefoundry.console import console

    console.print(f"{out}: removed {removed_n:,} files of opted-out repositories "
                  f"(list sha256 {entries.sha256[:12]}…)", highlight=False)
    return out

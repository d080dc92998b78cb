"""Sources: what `codefoundry data curate SOURCE...` accepts, each turned into work units.

    site-packages | stdlib          the embedded corpus (installed distributions; the stdlib)
    DIR with .git                   a git repository (files at HEAD)
    DIR of repositories             each child git repo / folder / archive is a repository
    DIR                             a plain folder: one repository
    FILE.tar.gz|.tgz|.tar|.zip      an archived repository (bounded in-memory extraction)
    FILE.jsonl[.gz] | FILE.parquet  rows with content + path (e.g. an export of The Stack)
    URL.jsonl | URL.parquet         the same behind an fsspec URL (s3://, gs://, memory://; file:// is local)
    DIR with state.json             a Hugging Face `datasets` save_to_disk directory
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from codefoundry.data.pipeline import WorkUnit
from codefoundry.data.pipeline.storage import is_remote, local_path
from codefoundry.data.sources.archive import ArchiveRepo, is_archive
from codefoundry.data.sources.git import GitRepo, is_git_repo
from codefoundry.data.sources.local import SKIP_DIRS, DirectoryRepo
from codefoundry.data.sources.python_env import (
    EMBEDDED,
    DistributionRepo,
    StdlibRepo,
    distributions,
    stdlib_dir,
)
from codefoundry.data.sources.remote import is_remote_table, remote_table_units
from codefoundry.data.sources.tables import is_hf_dataset, is_jsonl, is_parquet, table_units
from codefoundry.data.sources.unit import ReadOptions
from codefoundry.errors import UserError


def _repo_unit(path: Path, options: ReadOptions) -> WorkUnit | None:
    if path.is_dir():
        return GitRepo(path, options) if is_git_repo(path) else DirectoryRepo(path, options)
    if is_archive(path):
        return ArchiveRepo(path, options)
    return None


def _is_folder_of_repos(path: Path) -> bool:
    return any(child.is_dir() and is_git_repo(child) for child in path.iterdir())


def units_for(source: str, options: ReadOptions) -> list[WorkUnit]:
    """The work units of one SOURCE argument (repositories limited by `max_repos`)."""
    limit = options.limits.max_repos
    if source == "site-packages":
        return [DistributionRepo(d, options) for d in distributions()][:limit]
    if source == "stdlib":
        return [StdlibRepo(stdlib_dir(), options)]
    if is_remote(source):
        if not is_remote_table(source):
            raise UserError(f"source {source}: only .jsonl and .parquet files are read from a URL")
        return list(remote_table_units(source, options))
    path = local_path(source)
    if not path.exists():
        raise UserError(f"source {source} does not exist",
                        f"give a directory, git repository, archive, JSONL/Parquet file, or one of "
                        f"{', '.join(EMBEDDED)}")
    if is_jsonl(path) or is_parquet(path) or is_hf_dataset(path):
        return list(table_units(path, options))
    if path.is_dir() and not is_git_repo(path) and _is_folder_of_repos(path):
        children = sorted((c for c in path.iterdir() if c.name not in SKIP_DIRS and not c.name.startswith(".")),
                          key=lambda c: c.name)
        units = [u for c in children if (u := _repo_unit(c, options)) is not None]
        return units[:limit]
    unit = _repo_unit(path, options)
    if unit is None:
        raise UserError(f"source {source} is not a directory, archive (.tar.gz/.zip), .jsonl or .parquet file")
    return [unit]


def resolve(sources: Sequence[str], options: ReadOptions) -> list[WorkUnit]:
    """Work units of every source, in the order given (the plan's order, hence the output's)."""
    if not sources:
        raise UserError("no SOURCE given", f"try: codefoundry data curate {' '.join(EMBEDDED)} --out dataset/")
    units: list[WorkUnit] = []
    for source in sources:
        units.extend(units_for(str(source), options))
    return units


__all__ = ["EMBEDDED", "ReadOptions", "resolve", "units_for"]

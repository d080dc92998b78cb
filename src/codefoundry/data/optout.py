"""Opt-out: remove repositories whose owners asked to be left out (BigCode's `opt-out-v2` process).

A list file has one entry per line (blank lines and `# comments` ignored):
    octocat                 every repository of a user or organisation
    octocat/hello-world     one repository
    acme-*/*  or  */tmp-*   shell globs over `owner/name` (a glob without "/" matches owners)
    https://github.com/octocat/hello-world(.git)   URLs are read as owner/repo
Matching is case-insensitive (GitHub names are). Removed rows get reason `opt_out`, and no
text of an opted-out repository stays anywhere: `forget` clears the content of every removed
row of theirs (whatever its reason) even where the dataset keeps removed content, and the
search and membership indexes are built from the kept rows only.

    codefoundry data curate … --opt-out FILE          during curation
    codefoundry data opt-out DATASET --list FILE --out NEW   on a finished dataset
    … --models DIR …      and which of these models and adapters were trained on listed repositories
                          (`exposures`: the kept rows of each dataset in their lineage)
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from codefoundry.config import StageConfig
from codefoundry.data.pipeline import Filter
from codefoundry.errors import UserError
from codefoundry.lineage import training_datasets
from codefoundry.manifest import MANIFEST_NAME, read_manifest

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


def forget(removed: pa.Table, entries: OptOutList) -> pa.Table:
    """`removed` (REMOVED_SCHEMA) with `content` cleared in every row of an opted-out repository.

    Rows already removed as `opt_out` (by an earlier list) are cleared too: an opt-out is never undone.
    """
    repos = removed.column("repo_name").unique().to_pylist()
    listed = pc.is_in(removed.column("repo_name"), pa.array([r for r in repos if entries.matches(r)], pa.string()))
    gone = pc.or_(listed, pc.fill_null(pc.equal(removed.column("reason"), REASON), False))
    content = pc.if_else(gone, pa.scalar(None, pa.string()), removed.column("content"))
    return removed.set_column(removed.schema.get_field_index("content"), "content", content)


@dataclass(frozen=True)
class ModelExposure:
    """Which listed repositories a model's (or adapter's) training data held, per training dataset."""

    artifact: Path
    kind: str
    repos: dict[str, list[str]]     # dataset role → listed repositories among its kept rows
    unknown: list[str]              # dataset roles whose files are gone (what they held cannot be read)

    @property
    def affected(self) -> bool:
        return any(self.repos.values())


def model_artifacts(dirs: Sequence[str | Path]) -> list[Path]:
    """The model and adapter directories named by `dirs`: each a model/adapter, or a folder of them."""
    found: list[Path] = []
    for given in map(Path, dirs):
        if not given.is_dir():
            raise UserError(f"--models {given} is not a directory")
        candidates = [given] if (given / MANIFEST_NAME).exists() else sorted(
            p for p in given.iterdir() if (p / MANIFEST_NAME).exists())
        picked = [p for p in candidates if read_manifest(p).kind in ("model", "adapter")]
        if not picked:
            raise UserError(f"--models {given} holds no codefoundry model or adapter (no manifest.json of kind "
                            "model or adapter in it or its subfolders), so what it was trained on is not recorded")
        found += [p for p in picked if p not in found]
    return found


def _kept_repos(dataset: Path) -> set[str]:
    names: set[str] = set()
    for shard in sorted((dataset / "data").glob("*/*.parquet")):
        column = pq.read_table(shard, columns=["repo_name"]).column("repo_name")
        names.update(n for n in pc.unique(column).to_pylist() if n)
    return names


def exposures(list_file: str | Path, artifacts: Sequence[Path]) -> list[ModelExposure]:
    """For each model or adapter: the repositories of the opt-out list its training datasets kept (through
    its lineage: a fine-tune's base model, a merge's base and adapter), from its manifests."""
    entries = OptOutList.from_config(OptOutConfig(file=Path(list_file)))
    cache: dict[Path, list[str]] = {}
    out = []
    for artifact in artifacts:
        repos: dict[str, list[str]] = {}
        unknown: list[str] = []
        for u in training_datasets(artifact):
            if u.manifest is None:
                unknown.append(u.role)
                continue
            key = u.path.resolve()
            if key not in cache:
                cache[key] = sorted(r for r in _kept_repos(u.path) if entries.matches(r))
            repos[u.role] = cache[key]
        out.append(ModelExposure(artifact, read_manifest(artifact).kind, repos, unknown))
    return out

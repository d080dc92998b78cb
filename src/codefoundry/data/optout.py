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
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
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


def opt_out_dataset(dataset: str | Path, list_file: str | Path, out: str | Path, overwrite: bool = False,
                    workers: int | None = None) -> Path:
    """A copy of `dataset` without the listed repositories; the list's sha256 goes into the manifest."""
    from codefoundry.data.restep import apply_steps

    config = OptOutConfig(file=Path(list_file))
    entries = OptOutList.from_config(config)
    return apply_steps(dataset, out, [OptOut(entries)], {"opt_out": config},
                       extra={"opt_out_sha256": entries.sha256, "opt_out_entries": len(entries)},
                       workers=workers, overwrite=overwrite)

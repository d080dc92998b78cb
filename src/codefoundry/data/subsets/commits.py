"""Git commits as StarCoderData had them: one row per changed file of a small commit.

    <commit_before>{file before}<commit_msg>{message}<commit_after>{file after}

Read with the `git` command line, three processes per repository whatever its history: one
`git log --numstat` (at most `max_commits_per_repo` commits from HEAD), one `git ls-tree` and
one `git cat-file --batch` for the blobs. Commits that do not make training rows are listed in
removed/ with their reason, in the spirit of StarCoderData's filters:

    commit:merge             a merge (one row per merge commit, no path)
    commit:bot               author or committer looks like a bot (dependabot[bot], renovate, …)
    commit:short_message | commit:generic_message | commit:long_message   message quality
    commit:too_many_files    more files changed than `max_files_per_commit` (bulk or generated changes)
    commit:diff_too_big      more lines added + deleted in the file than `max_changed_lines`
    commit:file_too_big      the file before or after is over `max_file_bytes`
    commit:binary | commit:deleted_file | read:invalid_utf8

Authors' and committers' e-mail addresses never reach the content: trailers such as
`Signed-off-by:` are cut from messages and every address seen in the history is replaced by
`<EMAIL>` in messages and files. The license is the repository's at HEAD, as for files.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from pydantic import Field

from codefoundry.config import StageConfig
from codefoundry.data.license import LicenseEvidence, decode_lenient, is_license_file, is_metadata_file, license_type
from codefoundry.data.pipeline import REMOVED_SCHEMA
from codefoundry.data.sources.git import BlobReader, repo_name
from codefoundry.data.sources.repo import Skip, decode, printable
from codefoundry.data.sources.unit import ReadOptions

COMMIT_BEFORE, COMMIT_MSG, COMMIT_AFTER = "<commit_before>", "<commit_msg>", "<commit_after>"
TOKENS = (COMMIT_BEFORE, COMMIT_MSG, COMMIT_AFTER)
EMAIL_TOKEN = "<EMAIL>"
_RECORD, _FIELD, _BODY_END = "\x1e", "\x1f", "\x1d"
_FORMAT = f"{_RECORD}%H{_FIELD}%P{_FIELD}%an{_FIELD}%ae{_FIELD}%cn{_FIELD}%ce{_FIELD}%B{_BODY_END}"
_TRAILER = re.compile(r"^\s*(signed-off-by|co-authored-by|reviewed-by|acked-by|tested-by|reported-by|cc)\s*:.*$",
                      re.IGNORECASE | re.MULTILINE)
_EMAIL = re.compile(r"[\w.+\[\]-]+@[\w-]+(?:\.[\w-]+)+")  # brackets: 123+dependabot[bot]@users.noreply…


def _default_bots() -> list[str]:
    return [r"\[bot\]", r"^dependabot", r"^renovate", r"^greenkeeper", r"^github-actions", r"^snyk-bot",
            r"^pre-commit-ci", r"^allcontributors", r"(^|[-_ ])bot($|[-_ @])"]


def _default_generic() -> list[str]:
    return ["update", "updates", "fix", "fixes", "wip", "commit", "changes", "initial commit", "first commit",
            "minor", "minor changes", "misc", "test", "tmp", "cleanup", "."]


class CommitsConfig(StageConfig):
    """The `commits` subset: changed files of the git repositories among the sources (`--commits`)."""

    enabled: bool = False
    max_commits_per_repo: int = Field(1000, ge=1)
    """Commits read from each repository, newest first from HEAD (merges included in the count)."""
    max_changed_lines: int = Field(200, ge=1)
    """Lines added + deleted in one file of a commit; larger diffs leave (`commit:diff_too_big`)."""
    max_files_per_commit: int = Field(20, ge=1)
    """Commits changing more files leave whole (`commit:too_many_files`)."""
    max_file_bytes: int = Field(100_000, ge=1)
    """The file before and after must each fit (`commit:file_too_big`)."""
    min_message_chars: int = Field(10, ge=0)
    max_message_chars: int = Field(10_000, ge=1)
    generic_messages: list[str] = Field(default_factory=_default_generic)
    """First lines that say nothing ("update", "wip"), compared in lower case."""
    bot_patterns: list[str] = Field(default_factory=_default_bots)
    """Regular expressions over author/committer names and e-mails (lower case) that mark bots."""


@dataclass
class Change:
    path: str
    added: int | None     # None: binary
    deleted: int | None


@dataclass
class Commit:
    sha: str
    parents: list[str]
    names: tuple[str, str]
    emails: tuple[str, str]
    message: str
    changes: list[Change] = field(default_factory=list)


def parse_log(text: str) -> list[Commit]:
    """Commits of `git log --numstat --format=_FORMAT` output."""
    commits = []
    for record in text.split(_RECORD)[1:]:
        head, _, stat = record.partition(_BODY_END)
        parts = head.split(_FIELD)
        if len(parts) != 7:
            continue
        sha, parents, an, ae, cn, ce, body = parts
        commit = Commit(sha, parents.split(), (an, cn), (ae, ce), body.strip())
        for line in stat.splitlines():
            cols = line.split("\t", 2)
            if len(cols) != 3:
                continue
            added, deleted, path = cols
            commit.changes.append(Change(path, None if added == "-" else int(added),
                                         None if deleted == "-" else int(deleted)))
        commits.append(commit)
    return commits


def clean_message(message: str, emails: set[str]) -> str:
    """The message without trailers and e-mail addresses of the history's people."""
    text = _TRAILER.sub("", message).strip()
    return scrub(text, emails)


def scrub(text: str, emails: set[str]) -> str:
    """`text` with every address in `emails` (case-insensitive) replaced by <EMAIL>."""
    if not emails or "@" not in text:
        return text
    return _EMAIL.sub(lambda m: EMAIL_TOKEN if m.group(0).lower() in emails else m.group(0), text)


def format_commit(before: str, message: str, after: str) -> str:
    return f"{COMMIT_BEFORE}{before}{COMMIT_MSG}{message}{COMMIT_AFTER}{after}"


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), "-c", "core.quotepath=false", *args], capture_output=True,
                          check=False)


@dataclass(frozen=True)
class GitCommits:
    """The commits of one git repository as `commits` rows."""

    root: Path
    options: ReadOptions
    config: CommitsConfig

    def describe(self) -> str:
        return printable(f"commits {self.root} (≤ {self.config.max_commits_per_repo})")

    def _evidence(self, reader: BlobReader) -> LicenseEvidence:
        evidence = LicenseEvidence()
        listing = _git(self.root, "ls-tree", "-r", "-l", "-z", "--full-tree", "HEAD")
        for item in listing.stdout.split(b"\0") if listing.returncode == 0 else []:
            if b"\t" not in item:
                continue
            meta, path_b = item.split(b"\t", 1)
            _, kind, sha, size = meta.split()
            path = path_b.decode("utf-8", "replace")
            if kind == b"blob" and (is_license_file(path) or is_metadata_file(path)) and \
                    size.isdigit() and int(size) <= self.options.limits.max_file_bytes:
                try:
                    evidence.add_file(path, decode_lenient(reader.read(sha.decode())), self.options.license_threshold)
                except Skip:
                    continue
        return evidence

    def read(self) -> Iterator[pa.Table]:
        cfg = self.config
        log = _git(self.root, "log", f"--max-count={cfg.max_commits_per_repo}", "--no-renames", "--numstat",
                   f"--format={_FORMAT}", "HEAD")
        if log.returncode != 0:  # no commits yet
            return
        commits = parse_log(log.stdout.decode("utf-8", "replace"))
        emails = {e.lower() for c in commits for e in c.emails if e} | \
            {m.lower() for c in commits for t in _TRAILER.finditer(c.message) for m in _EMAIL.findall(t.group(0))}
        bots = [re.compile(p) for p in cfg.bot_patterns]
        generic = {g.lower() for g in cfg.generic_messages}
        name = printable(repo_name(self.root))
        rows: list[dict[str, object]] = []
        reader = BlobReader(self.root)
        try:
            evidence = self._evidence(reader)
            for commit in commits:
                rows.extend(self._rows(commit, reader, emails, bots, generic))
        finally:
            reader.close()
        for row in rows:
            ids = evidence.licenses_for(str(row["path"]), [])
            row.update(repo_name=name, licenses=ids, license_type=license_type(ids, self.options.permissive))
        table = pa.Table.from_pylist(rows, schema=REMOVED_SCHEMA) if rows else REMOVED_SCHEMA.empty_table()
        for start in range(0, table.num_rows, self.options.batch_rows):
            yield table.slice(start, self.options.batch_rows)

    def _commit_reason(self, commit: Commit, message: str, bots: list[re.Pattern[str]], generic: set[str]
                       ) -> str | None:
        cfg = self.config
        people = [x.lower() for x in (*commit.names, *commit.emails) if x]
        if any(b.search(p) for b in bots for p in people):
            return "commit:bot"
        first = message.split("\n", 1)[0].strip().lower().rstrip(".!")
        if first in generic:
            return "commit:generic_message"
        if len(message) < cfg.min_message_chars:
            return "commit:short_message"
        if len(message) > cfg.max_message_chars:
            return "commit:long_message"
        if len(commit.changes) > cfg.max_files_per_commit:
            return "commit:too_many_files"
        return None

    def _rows(self, commit: Commit, reader: BlobReader, emails: set[str], bots: list[re.Pattern[str]],
              generic: set[str]) -> Iterator[dict[str, object]]:
        if len(commit.parents) > 1:
            yield {"path": "", "reason": "commit:merge"}
            return
        message = clean_message(commit.message, emails)
        reason = self._commit_reason(commit, message, bots, generic)
        for change in commit.changes:
            row: dict[str, object] = {"path": change.path, "reason": reason}
            if reason is None:
                try:
                    row["content"] = self._content(commit, change, message, reader, emails)
                except Skip as skip:
                    row["reason"] = skip.reason
            yield row

    def _content(self, commit: Commit, change: Change, message: str, reader: BlobReader, emails: set[str]) -> str:
        cfg = self.config
        if change.added is None or change.deleted is None:
            raise Skip("commit:binary")
        if change.added + change.deleted > cfg.max_changed_lines:
            raise Skip("commit:diff_too_big")
        try:
            after_b = reader.read(f"{commit.sha}:{change.path}")
        except Skip:
            raise Skip("commit:deleted_file") from None
        before_b = b""
        if commit.parents:
            try:
                before_b = reader.read(f"{commit.parents[0]}:{change.path}")
            except Skip:
                before_b = b""  # the commit adds the file
        if max(len(before_b), len(after_b)) > cfg.max_file_bytes:
            raise Skip("commit:file_too_big")
        before, after = decode(before_b), decode(after_b)
        return format_commit(scrub(before, emails), message, scrub(after, emails))

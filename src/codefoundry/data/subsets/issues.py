"""GitHub issues as StarCoderData had them, from a JSONL export (`--issues FILE`).

One issue per line, in this shape (GH Archive's and the GitHub API's names are mapped onto it;
unknown fields are ignored):

    {"repo": "owner/name", "number": 12, "title": "…", "author": "login", "body": "…", "closed": true,
     "comments": [{"author": "login", "body": "…"}]}

    GitHub API issue   repository_url …/repos/OWNER/NAME, user.login, state "closed" / closed_at,
                       comments as a list of comment objects (a count is no comments)
    GH Archive event   repo.name, payload.issue (an API issue), payload.comment(s)

The reader stores each issue as normalised JSON in `content` (malformed lines leave with
`issue:bad_json` or `issue:missing_fields`); the `issue` step writes the text

    <issue_start>Title: {title}\\nusername_0: {body}<issue_comment>username_1: {comment}…<issue_closed>

Logins become `username_0`, `username_1`, … in order of appearance, consistently within the
issue (`@login` mentions too). Comments by bots are dropped; an issue left with no human text
goes with `issue:bot_only`. With an opt-out list, an issue opened by a listed user goes
(`opt_out`) and their comments are dropped, whatever the repository.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field

from codefoundry.config import StageConfig
from codefoundry.data.annotate import git_blob_sha1
from codefoundry.data.optout import REASON as OPT_OUT
from codefoundry.data.optout import OptOutList
from codefoundry.data.pipeline import REMOVED_SCHEMA, Step, StepResult, from_records
from codefoundry.data.pipeline.schema import with_reason
from codefoundry.errors import UserError

ISSUE_START, ISSUE_COMMENT, ISSUE_CLOSED = "<issue_start>", "<issue_comment>", "<issue_closed>"
TOKENS = (ISSUE_START, ISSUE_COMMENT, ISSUE_CLOSED)
_API_REPO = re.compile(r"/repos/([^/]+/[^/]+)/?$")
_MENTION = re.compile(r"(?<![\w/@.])@([A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))\b")
_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_CODE = re.compile(r"(```.*?(?:```|$)|`[^`\n]+`)", re.DOTALL)  # one group: split() keeps the code parts
_WORD = re.compile(r"[^\W\d_]+")
STOPWORDS = frozenset({  # common English words; not "at": stack traces are full of it
    "the", "a", "an", "and", "or", "but", "is", "are", "was", "were", "be", "been", "to", "of", "in", "on", "for",
    "with", "this", "that", "it", "not", "i", "you", "we", "they", "he", "she", "my", "your", "our", "can",
    "could", "should", "would", "will", "do", "does", "did", "have", "has", "had", "if", "when", "what", "how",
    "why", "there", "here", "from", "by", "as", "so", "no", "yes",
})


def _default_bots() -> list[str]:
    return [r"\[bot\]$", r"^dependabot", r"^renovate", r"^github-actions", r"^codecov", r"^stale$", r"^greenkeeper",
            r"^allcontributors", r"^vercel$", r"^netlify$", r"^sonarcloud", r"-bot$", r"^bot-"]


class IssuesConfig(StageConfig):
    """The `issues` subset: a JSONL export of GitHub issues (`--issues FILE`)."""

    files: list[Path] = Field(default_factory=list)
    """JSONL exports (.jsonl or .jsonl.gz), one issue per line."""
    rows_per_unit: int = Field(20_000, ge=1)
    min_chars: int = Field(200, ge=0)
    """Shorter issue texts leave with `issue:too_short`."""
    max_chars: int = Field(100_000, ge=1)
    max_comments: int = Field(100, ge=1)
    """Comments kept per issue (the first ones)."""
    max_comment_chars: int = Field(10_000, ge=1)
    """Characters kept of each post (title excluded)."""
    min_natural_language: float = Field(0.15, ge=0, le=1)
    """Share of words outside code blocks that are common English words; lower leaves with
    `issue:not_natural_language` (logs, stack traces, code dumps)."""
    bot_patterns: list[str] = Field(default_factory=_default_bots)
    """Regular expressions over logins (lower case) that mark bots; API users of type "Bot" are bots too."""


def _login(user: Any) -> tuple[str | None, bool]:
    """(login, is a bot by the API's own word) of an author field: a string or an API user object."""
    if isinstance(user, Mapping):
        login = user.get("login")
        return (str(login) if login else None), user.get("type") == "Bot"
    return (str(user) if user else None), False


def normalize(raw: Any) -> dict[str, Any] | str:
    """An issue in our shape, or the reason slug it cannot be read."""
    if not isinstance(raw, Mapping):
        return "issue:bad_json"
    issue: Mapping[str, Any] = raw
    payload = raw.get("payload")
    repo = raw.get("repo")
    if isinstance(payload, Mapping) and isinstance(payload.get("issue"), Mapping):  # GH Archive
        issue = payload["issue"]
        repo = repo.get("name") if isinstance(repo, Mapping) else repo
        comments = payload.get("comments", [payload["comment"]] if isinstance(payload.get("comment"), Mapping)
                               else raw.get("comments"))
    else:
        comments = raw.get("comments")
    if repo is None or isinstance(repo, Mapping):
        url = issue.get("repository_url") or ""
        m = _API_REPO.search(str(url))
        repo = m.group(1) if m else (repo.get("full_name") if isinstance(repo, Mapping) else None)
    number = issue.get("number")
    title = issue.get("title")
    author, bot = _login(issue.get("author", issue.get("user")))
    if not isinstance(repo, str) or "/" not in repo or not isinstance(number, int) or not isinstance(title, str):
        return "issue:missing_fields"
    closed = issue.get("closed")
    if not isinstance(closed, bool):
        closed = issue.get("state") == "closed" or bool(issue.get("closed_at"))
    posts = []
    for c in comments if isinstance(comments, list) else []:
        if isinstance(c, Mapping):
            login, is_bot = _login(c.get("author", c.get("user")))
            posts.append({"author": login, "bot": is_bot, "body": str(c.get("body") or "")})
    return {"repo": repo, "number": number, "title": title, "author": author, "bot": bot,
            "body": str(issue.get("body") or ""), "closed": closed, "comments": posts}


@dataclass(frozen=True)
class IssuesChunk:
    """Lines [start, stop) of one issues JSONL file."""

    path: Path
    start: int
    stop: int
    batch_rows: int = 2048

    def describe(self) -> str:
        return f"issues {self.path} lines {self.start}-{self.stop}"

    def read(self) -> Iterator[pa.Table]:
        rows: list[dict[str, Any]] = []
        opener = gzip.open if self.path.name.endswith(".gz") else open
        with opener(self.path, "rt", encoding="utf-8", errors="replace") as f:
            for i, line in enumerate(f):
                if i >= self.stop:
                    break
                if i < self.start or not line.strip():
                    continue
                try:
                    issue = normalize(json.loads(line))
                except json.JSONDecodeError:
                    issue = "issue:bad_json"
                if isinstance(issue, str):
                    rows.append({"repo_name": "", "path": f"{self.path.name}:{i + 1}", "reason": issue,
                                 "licenses": []})
                else:
                    rows.append({"repo_name": issue["repo"], "path": f"issues/{issue['number']}",
                                 "content": json.dumps(issue, ensure_ascii=False, sort_keys=True),
                                 "licenses": [], "license_type": "no_license"})
                if len(rows) >= self.batch_rows:
                    yield from_records(rows, REMOVED_SCHEMA)
                    rows = []
        if rows:
            yield from_records(rows, REMOVED_SCHEMA)


def issue_units(paths: list[Path], rows_per_unit: int, batch_rows: int = 2048) -> list[IssuesChunk]:
    """Work units of the issues files (`rows_per_unit` lines each); a missing file is a user error."""
    units = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"--issues {path}: no such file", "give a JSONL export, one GitHub issue per line")
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            n = sum(1 for _ in f)
        units += [IssuesChunk(path, s, min(s + rows_per_unit, n), batch_rows) for s in range(0, n, rows_per_unit)]
    return units


class Usernames:
    """login → username_k, in order of first appearance (case-insensitive, as GitHub logins are)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, login: str | None) -> str:
        key = (login or "ghost").lower()
        if key not in self.names:
            self.names[key] = f"username_{len(self.names)}"
        return self.names[key]

    def mentions(self, text: str) -> str:
        """`@login` of anyone in this issue (or any other mention) → `@username_k`, outside code
        (fenced blocks and `inline code` keep their decorators and e-mail-like strings)."""
        parts = _CODE.split(text)
        return "".join(part if k % 2 else _MENTION.sub(lambda m: "@" + self(m.group(1)), part)
                       for k, part in enumerate(parts))


_MARKUP = re.compile(r"<issue_(?:start|comment|closed)>|^Title: |username_\d+", re.MULTILINE)


def natural_language_share(text: str) -> float:
    """Share of words outside code blocks (and our own markup) that are common English words."""
    words = [w.lower() for w in _WORD.findall(_CODE_BLOCK.sub(" ", _MARKUP.sub(" ", text)))]
    return sum(w in STOPWORDS for w in words) / len(words) if words else 0.0


class IssueRewrite(Step):
    """Normalised issue JSON in, the issue text out: bots dropped, usernames replaced, posts truncated."""

    name = "issue"

    def __init__(self, config: IssuesConfig | None = None, opt_out: OptOutList | None = None) -> None:
        super().__init__()
        self.config = config or IssuesConfig()
        self.opt_out = opt_out

    def _is_bot(self, login: str | None, flagged: bool, patterns: list[re.Pattern[str]]) -> bool:
        return flagged or (login is not None and any(p.search(login.lower()) for p in patterns))

    def _opted_out(self, login: str | None) -> bool:
        return bool(self.opt_out is not None and login and login.lower() in self.opt_out.owners)

    def rewrite(self, issue: Mapping[str, Any]) -> str:
        """The issue text, or raise ValueError(reason)."""
        cfg = self.config
        patterns = [re.compile(p) for p in cfg.bot_patterns]
        if self._opted_out(issue["author"]):
            raise ValueError(OPT_OUT)
        posts = [(issue["author"], issue["bot"], issue["body"])]
        posts += [(c["author"], c["bot"], c["body"]) for c in issue["comments"][: cfg.max_comments]]
        human = []
        for login, flagged, body in posts:
            if self._is_bot(login, flagged, patterns):
                self.stat_update("bot_posts_dropped")
            elif self._opted_out(login):
                self.stat_update("opted_out_posts_dropped")
            else:
                human.append((login, body))
        if not any(body.strip() for _, body in human):
            raise ValueError("issue:bot_only")
        users = Usernames()
        for login, _ in human:
            users(login)
        title = users.mentions(issue["title"])
        parts = []
        for k, (login, body) in enumerate(human):
            text = users.mentions(body[: cfg.max_comment_chars])
            parts.append(f"{ISSUE_START}Title: {title}\n{users(login)}: {text}" if k == 0 and login == issue["author"]
                         else f"{ISSUE_COMMENT}{users(login)}: {text}")
        if not parts[0].startswith(ISSUE_START):  # the opening post was a bot's: the title still opens the issue
            parts.insert(0, f"{ISSUE_START}Title: {title}\n")
        return "".join(parts) + (ISSUE_CLOSED if issue["closed"] else "")

    def process(self, batch: pa.Table) -> StepResult:
        kept, removed, reasons = [], [], []
        for row in batch.to_pylist():
            try:
                issue = json.loads(row["content"] or "")
                text = self.rewrite(issue)
                share = natural_language_share(text)
                if share < self.config.min_natural_language:
                    raise ValueError("issue:not_natural_language")
            except (ValueError, KeyError, TypeError) as e:
                removed.append({**row, "content": None})  # the raw JSON holds logins: never kept
                reasons.append(str(e.args[0]) if isinstance(e, ValueError) and str(e.args[0]).startswith(
                    ("issue:", OPT_OUT)) else "issue:bad_json")
                continue
            raw = text.encode("utf-8", "surrogatepass")
            kept.append({**row, "content": text, "hexsha": git_blob_sha1(raw), "size": len(raw), "ext": ""})
        gone = with_reason(from_records(removed), reasons) if removed else REMOVED_SCHEMA.empty_table()
        return StepResult(from_records(kept), gone)

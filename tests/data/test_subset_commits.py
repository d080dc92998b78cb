"""Commits: a real git history built here (a merge, a bot commit, a huge generated diff, a generic message)
read by the `commits` work unit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from codefoundry.data.sources.unit import ReadOptions
from codefoundry.data.subsets.commits import CommitsConfig, GitCommits
from conftest import MIT_LICENSE, stdlib_files

FETCH_V1 = '''"""Fetch pages. Maintainer: Bob Stone <bob.stone@corp.example>"""
import urllib.request


def fetch(url):
    return urllib.request.urlopen(url).read()
'''
FETCH_V2 = FETCH_V1 + '''

def fetch_retry(url, tries=3):
    for attempt in range(tries):
        try:
            return fetch(url)
        except OSError:
            if attempt == tries - 1:
                raise
'''


def commit(repo: Path, message: str, files: dict[str, str], who: tuple[str, str] = ("Alice Doe", "alice@example.org"),
           *extra: str) -> None:
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    env = {**os.environ, "GIT_AUTHOR_NAME": who[0], "GIT_AUTHOR_EMAIL": who[1], "GIT_COMMITTER_NAME": who[0],
           "GIT_COMMITTER_EMAIL": who[1], "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z"}
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", message, *extra], cwd=repo, check=True, env=env)


def git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Carol", "GIT_AUTHOR_EMAIL": "carol@example.net",
           "GIT_COMMITTER_NAME": "Carol", "GIT_COMMITTER_EMAIL": "carol@example.net"}
    subprocess.run(["git", *args], cwd=repo, check=True, env=env, capture_output=True)


def build_history(repo: Path) -> Path:
    """main: initial → fetch_retry (Alice, signed off) → bot bump → 'update' → huge generated file;
    feature: a textwrap change by Bob, merged with --no-ff."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "remote", "add", "origin", "https://github.com/acme/fetcher.git")
    commit(repo, "Initial import of the fetch tools", {"LICENSE": MIT_LICENSE, "fetch.py": FETCH_V1,
                                                       "requirements.txt": "requests==2.0\n"})
    commit(repo, "Add a retry helper around fetch\n\nIt retries OSError up to three times.\n\n"
                 "Signed-off-by: Alice Doe <alice@example.org>", {"fetch.py": FETCH_V2})
    commit(repo, "Bump requests from 2.0 to 2.31", {"requirements.txt": "requests==2.31\n"},
           ("dependabot[bot]", "49699333+dependabot[bot]@users.noreply.github.com"))
    commit(repo, "update", {"fetch.py": FETCH_V2 + "\n# tuned\n"})
    git(repo, "checkout", "-q", "-b", "feature")
    textwrap_py = stdlib_files("textwrap.py")["textwrap.py"]
    commit(repo, "Vendor textwrap for the report formatter", {"fmt/textwrap.py": textwrap_py},
           ("Bob Stone", "bob.stone@corp.example"))
    git(repo, "checkout", "-q", "main")
    table = "\n".join(f"CODE_{i} = {i * 7919 % 100003}" for i in range(5000)) + "\n"
    commit(repo, "Regenerate the lookup table from the schema", {"gen/table.py": table})
    git(repo, "merge", "-q", "--no-ff", "feature", "-m", "Merge branch 'feature'")
    return repo


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_history(tmp_path_factory.mktemp("commits") / "fetcher")


def _rows(repo: Path, config: CommitsConfig) -> list[dict]:
    unit = GitCommits(repo, ReadOptions(), config)
    tables = list(unit.read())
    return pa.concat_tables(tables).to_pylist() if tables else []


def test_commit_rows_and_reasons(history: Path) -> None:
    rows = _rows(history, CommitsConfig(enabled=True, max_changed_lines=1000))
    by = [(r["path"], r["reason"]) for r in rows]
    assert by == [
        ("", "commit:merge"),
        ("gen/table.py", "commit:diff_too_big"),          # 5,000 generated lines
        ("fmt/textwrap.py", None),                          # a new file: empty before
        ("fetch.py", "commit:generic_message"),             # "update"
        ("requirements.txt", "commit:bot"),
        ("fetch.py", None),
        ("LICENSE", None), ("fetch.py", None), ("requirements.txt", None),
    ]
    assert {r["repo_name"] for r in rows} == {"acme/fetcher"}
    assert all(r["licenses"] == ["MIT"] and r["license_type"] == "permissive" for r in rows)
    retry = rows[5]["content"]
    assert retry.startswith("<commit_before>" + FETCH_V1.replace("bob.stone@corp.example", "<EMAIL>"))
    assert "<commit_msg>Add a retry helper around fetch\n\nIt retries OSError up to three times.<commit_after>" in retry
    assert retry.endswith("<commit_after>" + FETCH_V2.replace("bob.stone@corp.example", "<EMAIL>"))
    added = rows[2]["content"]
    assert added.startswith("<commit_before><commit_msg>Vendor textwrap for the report formatter<commit_after>")
    # no author's or committer's address anywhere, not even the one in a file or a sign-off
    for r in rows:
        for email in ("alice@example.org", "bob.stone@corp.example", "carol@example.net", "dependabot"):
            assert email not in (r["content"] or "")


def test_commit_limits(history: Path) -> None:
    rows = _rows(history, CommitsConfig(enabled=True, max_changed_lines=5, max_commits_per_repo=4,
                                        max_files_per_commit=2))
    by = [(r["path"], r["reason"]) for r in rows]
    assert by == [("", "commit:merge"), ("gen/table.py", "commit:diff_too_big"),
                  ("fmt/textwrap.py", "commit:diff_too_big"), ("fetch.py", "commit:generic_message")]
    initial = _rows(history, CommitsConfig(enabled=True, max_changed_lines=5000, max_files_per_commit=2))[-1]
    assert initial["reason"] == "commit:too_many_files"


def test_scrub_replaces_the_historys_addresses_only() -> None:
    from codefoundry.data.subsets.commits import clean_message, scrub

    bot = "49699333+dependabot[bot]@users.noreply.github.com"
    assert scrub(f"from {bot} and Alice@Example.org, not help@python.org", {bot, "alice@example.org"}) == \
        "from <EMAIL> and <EMAIL>, not help@python.org"
    assert clean_message("Fix the parser\n\nCo-authored-by: Bob <bob@x.org>\nSigned-off-by: A <a@y.org>", set()) \
        == "Fix the parser"

"""Issues: a JSONL export in our shape, the GitHub API's and GH Archive's, with bots, usernames, PII and
malformed lines, read by the issues unit and rewritten by the `issue` step."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from codefoundry.data.optout import OptOutList
from codefoundry.data.subsets.issues import IssueRewrite, IssuesConfig, issue_units

RETRY_BODY = ("When the server drops the connection, fetch() raises and the whole report is lost. "
              "It would be good if the client retried a few times before giving up, like @bob-smith suggested "
              "in the other thread. You can reach me at alice.dev@gmail.com if you need the logs.")
TRACE = "Traceback (most recent call last):\n" + "\n".join(
    f'  File "/usr/lib/python3/dist-packages/widgets/layout_{i}.py", line {i * 7}, in resize_{i}' for i in range(30))


def issues_lines() -> list[str]:
    ours = {"repo": "acme/fetcher", "number": 1, "title": "Retry failed fetches", "author": "alice-dev",
            "body": RETRY_BODY, "closed": True, "labels": ["enhancement"], "comments": [
                {"author": "bob-smith", "body": "Agreed, @alice-dev. I think three tries with a short backoff is "
                                                "enough for the report job."},
                {"author": "dependabot[bot]", "body": "Bumps requests from 2.0 to 2.31."},
                {"author": "Alice-Dev", "body": "Done in the retry helper, thanks for the review!"}]}
    api = {"repository_url": "https://api.github.com/repos/acme/fetcher", "number": 2, "title": "Docs for retry",
           "user": {"login": "carol", "type": "User"}, "state": "open", "closed_at": None,
           "body": "The README does not say how many times the client retries, and it is not clear what happens "
                   "to the partial report when every try fails. Could we document this in the usage section?",
           "comments": [{"user": {"login": "ci-helper", "type": "Bot"}, "body": "Coverage is 81%."}]}
    archive = {"type": "IssuesEvent", "repo": {"name": "octo/widgets"}, "payload": {"action": "closed", "issue": {
        "number": 7, "title": "Widget size is wrong on resize", "user": {"login": "dana"}, "state": "closed",
        "body": "When I resize the window the widget keeps its old size until I click on it. I expected it to "
                "follow the window size at once, as the documentation says it should do for every layout."}}}
    bot_only = {"repo": "acme/fetcher", "number": 3, "title": "Dependency dashboard", "author": "renovate[bot]",
                "body": "This issue lists the dependency updates of this repository and their status.",
                "closed": False, "comments": [{"author": "github-actions[bot]", "body": "Stale: no activity."}]}
    log_dump = {"repo": "acme/fetcher", "number": 4, "title": "crash", "author": "erin", "body": TRACE,
                "closed": False, "comments": []}
    short = {"repo": "acme/fetcher", "number": 5, "title": "broken", "author": "erin", "body": "it is broken",
             "closed": False}
    opted = {"repo": "acme/fetcher", "number": 6, "title": "Please add a proxy setting to the client",
             "author": "leaver", "body": RETRY_BODY, "closed": False}
    return [json.dumps(ours), json.dumps(api), "{oops", json.dumps(archive), json.dumps(bot_only),
            json.dumps({"repo": "x/y", "title": "no number"}), "", json.dumps(log_dump), json.dumps(short),
            json.dumps(opted)]


def write_issues(path: Path) -> Path:
    path.write_text("\n".join(issues_lines()) + "\n")
    return path


def test_issues_unit_and_rewrite(tmp_path: Path) -> None:
    units = issue_units([write_issues(tmp_path / "issues.jsonl")], rows_per_unit=4)
    assert [u.describe().rsplit(" ", 1)[-1] for u in units] == ["0-4", "4-8", "8-10"]
    rows = pa.concat_tables([t for u in units for t in u.read()])
    read_reasons = dict(zip(rows.column("path").to_pylist(), rows.column("reason").to_pylist(), strict=True))
    assert read_reasons["issues.jsonl:3"] == "issue:bad_json" and read_reasons["issues.jsonl:6"] == \
        "issue:missing_fields"
    good = rows.filter(pa.compute.is_null(rows.column("reason"))).drop_columns(["reason"])
    assert good.column("repo_name").to_pylist() == ["acme/fetcher", "acme/fetcher", "octo/widgets", "acme/fetcher",
                                                    "acme/fetcher", "acme/fetcher", "acme/fetcher"]
    step = IssueRewrite(IssuesConfig(), OptOutList.parse("leaver\n"))
    kept, removed = step(good)
    texts = dict(zip(kept.column("path").to_pylist(), kept.column("content").to_pylist(), strict=True))
    assert texts["issues/1"] == (
        "<issue_start>Title: Retry failed fetches\nusername_0: " + RETRY_BODY.replace("@bob-smith", "@username_1")
        + "<issue_comment>username_1: Agreed, @username_0. I think three tries with a short backoff is enough "
          "for the report job.<issue_comment>username_0: Done in the retry helper, thanks for the review!"
          "<issue_closed>")
    assert texts["issues/2"].startswith("<issue_start>Title: Docs for retry\nusername_0: The README")
    assert "Coverage" not in texts["issues/2"] and not texts["issues/2"].endswith("<issue_closed>")
    assert texts["issues/7"].endswith("<issue_closed>") and "dana" not in texts["issues/7"]
    for text in texts.values():
        assert not any(login in text for login in ("alice-dev", "bob-smith", "carol", "dependabot", "[bot]"))
    assert dict(zip(removed.column("path").to_pylist(), removed.column("reason").to_pylist(), strict=True)) == {
        "issues/3": "issue:bot_only", "issues/4": "issue:not_natural_language", "issues/6": "opt_out"}
    assert removed.column("content").null_count == removed.num_rows  # raw JSON (with logins) never kept
    assert step.stats.counters["bot_posts_dropped"] == 4 and "issues/5" in texts  # too short: a later filter


def test_cli_issue_mistakes_are_one_line(tmp_path: Path, capsys) -> None:
    from codefoundry.cli import run

    assert run(["data", "curate", "--issues", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "error: --issues" in err and "no such file" in err and "Traceback" not in err
    assert run(["data", "curate", "--out", str(tmp_path / "o"), "--max-commits-per-repo", "0"]) != 0
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_mentions_are_replaced_outside_code_only() -> None:
    from codefoundry.data.subsets.issues import Usernames

    users = Usernames()
    assert users("Alice") == "username_0"
    text = "Thanks @alice and @bob! Use `@pytest.fixture` here:\n```python\n@pytest.fixture\ndef db(): ...\n```\n@BOB"
    assert users.mentions(text) == ("Thanks @username_0 and @username_1! Use `@pytest.fixture` here:\n"
                                    "```python\n@pytest.fixture\ndef db(): ...\n```\n@username_1")

"""`data curate --commits --issues` end to end on real git repositories with notebooks and history: every
subset in datasets/DuckDB, stats and card, lookup/search/contains over every subset, and an opt-out that
removes a user's notebooks, commits and issues too."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import nbformat
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from nbformat import v4
from test_subset_commits import build_history, commit
from test_subset_issues import issues_lines
from test_subset_notebooks import plot_notebook, r_notebook

from codefoundry.cli import run
from codefoundry.data import contains, lookup, search
from codefoundry.manifest import read_manifest
from conftest import MIT_LICENSE, make_git_repo, stdlib_files


def _leaver_notebook() -> str:
    nb = v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "P"}})
    nb.cells = [v4.new_markdown_cell("## Proxy settings experiment\nTry the proxy handler against the staging host."),
                v4.new_code_cell("import urllib.request\nhandler = urllib.request.ProxyHandler({'http': 'proxy:3128'})"
                                 "\nopener = urllib.request.build_opener(handler)\nprint(opener.handlers)",
                                 outputs=[v4.new_output("stream", name="stdout", text="[<ProxyHandler>]\n")])]
    return nbformat.writes(nb)


def _eda_notebook() -> str:
    nb = v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "P"}})
    nb.cells = [v4.new_markdown_cell("# Exploring fetch timings\nHow long do the nightly fetches take per host?"),
                v4.new_code_cell("import statistics\ntimings = {'alpha': [1.2, 0.9, 1.4], 'beta': [3.1, 2.8]}\n"
                                 "for host, values in timings.items():\n"
                                 "    print(host, round(statistics.mean(values), 2), max(values))",
                                 outputs=[v4.new_output("stream", name="stdout",
                                                        text="alpha 1.17 1.4\nbeta 2.95 3.1\n")])]
    return nbformat.writes(nb)


LEAVER_ISSUE = {"repo": "leaver/tools", "number": 1, "title": "Proxy handler ignores the no_proxy variable",
                "author": "frank", "closed": False, "comments": [],
                "body": "When no_proxy is set in the environment, the handler still sends every request through the "
                        "proxy. I expected the hosts listed there to be reached directly, as curl does it."}


def _rows(dataset: Path, subset: str, sub: str = "data") -> list[dict]:
    return [r for f in sorted((dataset / sub / subset).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("subsets")
    fetcher = build_history(root / "repos" / "fetcher")
    commit(fetcher, "Add the sales report and R model notebooks",
           {"notebooks/report.ipynb": plot_notebook(), "notebooks/model.ipynb": r_notebook(),
            "notebooks/broken.ipynb": '{"cells": [', "notebooks/copy.ipynb": plot_notebook()})
    leaver = make_git_repo(root / "repos" / "leaver", {"LICENSE": MIT_LICENSE, "proxy.ipynb": _leaver_notebook()},
                           remote="https://github.com/leaver/tools.git")
    commit(leaver, "Read no_proxy before choosing the proxy handler",
           {"proxy.py": "import os\n\n\ndef bypass(host):\n    return host in os.environ.get('no_proxy', '')\n"})
    stack = root / "stack.jsonl"  # a table source (an export of The Stack) with a notebook among its rows
    stack.write_text("\n".join(json.dumps(r) for r in [
        {"content": _eda_notebook(), "path": "eda/explore.ipynb", "repo_name": "kaggle/eda", "licenses": ["MIT"]},
        {"content": stdlib_files("colorsys.py")["colorsys.py"], "path": "eda/colorsys.py", "repo_name": "kaggle/eda",
         "licenses": ["MIT"]}]) + "\n")
    issues = root / "issues.jsonl"
    issues.write_text("\n".join([*issues_lines(), json.dumps(LEAVER_ISSUE)]) + "\n")
    config = root / "c.yaml"
    config.write_text("workers: 1\ncommits: {max_changed_lines: 1000}\n"
                      "notebooks: {max_output_chars: 200}\n")
    out = root / "dataset"
    assert run(["data", "curate", str(root / "repos"), str(stack), "--out", str(out), "--config", str(config),
                "--commits",
                "--max-commits-per-repo", "50", "--issues", str(issues)]) == 0
    return out


def test_every_subset_loads_with_datasets_and_counts_in_stats(curated: Path, tmp_path: Path) -> None:
    stats = json.loads((curated / "stats.json").read_text())["subsets"]
    assert sorted(stats) == ["commits", "files", "issues", "notebooks"]
    assert read_manifest(curated, kind="dataset").extra["subsets"] == ["files", "notebooks", "commits", "issues"]
    front = yaml.safe_load((curated / "README.md").read_text().split("---")[1])
    assert [c["config_name"] for c in front["configs"]] == ["files", "notebooks", "commits", "issues"]
    for subset in stats:
        # a cache of its own: `datasets` keys a local folder's cache by its name ("dataset") and config,
        # so another run's dataset of the same name could answer
        ds = datasets.load_dataset(str(curated), subset, split="train", cache_dir=str(tmp_path / "hf"))
        assert len(ds) == stats[subset]["totals"]["kept_files"] > 0, subset
        assert "content" in ds.column_names
    files = {r["path"] for r in _rows(curated, "files")}
    assert {"fetch.py", "eda/colorsys.py"} <= files and not any(p.endswith(".ipynb") for p in files)  # own subset
    card = (curated / "card.md").read_text()
    for subset in stats:
        assert f"## Subset `{subset}`" in card
    assert "commit:merge" in card and "issue:bot_only" in card and "notebook:invalid_json" in card


def test_notebooks_subset(curated: Path) -> None:
    kept = _rows(curated, "notebooks")
    forms = sorted((r["path"], r["content"].startswith("<jupyter_start>")) for r in kept
                   if r["repo_name"] == "acme/fetcher")
    # report.ipynb and its copy: one of them per form (exact dedup keeps the first path), both forms kept
    assert forms == [("notebooks/copy.ipynb", False), ("notebooks/copy.ipynb", True)]
    assert {r["lang"] for r in kept} == {"Python"}  # the R notebook is too short for the notebook filter
    assert {r["path"] for r in kept if r["repo_name"] == "kaggle/eda"} == {"eda/explore.ipynb"}  # from the table
    removed = sorted((r["path"], r["reason"]) for r in _rows(curated, "notebooks", "removed"))
    assert removed == [("notebooks/broken.ipynb", "notebook:invalid_json")] * 2 + \
        [("notebooks/model.ipynb", "notebook:too_short")] * 2 + [("notebooks/report.ipynb", "exact_dedup")] * 2
    steps = json.loads((curated / "stats.json").read_text())["subsets"]["notebooks"]["steps"]
    assert steps["notebook"]["counters"]["binary_outputs_dropped"] >= 1


def test_commits_subset(curated: Path) -> None:
    kept = _rows(curated, "commits")
    assert {(r["repo_name"], r["path"]) for r in kept} >= {("acme/fetcher", "fetch.py"),
                                                          ("acme/fetcher", "fmt/textwrap.py")}
    assert all(r["content"].startswith("<commit_before>") and "<commit_msg>" in r["content"] for r in kept)
    assert all("@example.org" not in r["content"] and "bob.stone@" not in r["content"] for r in kept)
    reasons = {r["reason"] for r in _rows(curated, "commits", "removed")}
    assert {"commit:merge", "commit:bot", "commit:diff_too_big", "commit:generic_message"} <= reasons
    assert {r["license_type"] for r in kept} == {"permissive"}


def test_issues_subset_is_anonymised_and_redacted(curated: Path) -> None:
    kept = {r["path"]: r for r in _rows(curated, "issues") if r["repo_name"] == "acme/fetcher"}
    assert set(kept) == {"issues/1", "issues/2", "issues/6"}  # 6: opened by leaver, who has not opted out yet
    text = kept["issues/1"]["content"]
    assert text.startswith("<issue_start>Title: Retry failed fetches\nusername_0: ") and "<EMAIL>" in text
    assert "alice.dev@gmail.com" not in text and "alice-dev" not in text
    removed = {(r["repo_name"], r["path"]): r["reason"] for r in _rows(curated, "issues", "removed")}
    assert removed[("acme/fetcher", "issues/5")] == "issue:too_short"
    assert removed[("acme/fetcher", "issues/3")] == "issue:bot_only"


def test_lookup_search_contains_cover_every_subset(curated: Path) -> None:
    statuses = lookup(curated, user="acme")
    assert {s.subset for s in statuses} == {"files", "notebooks", "commits", "issues"}
    assert any(s.subset == "commits" and s.status == "commit:merge" for s in statuses)
    hits = search(curated, "retried a few times before giving up")
    assert {(h.subset, h.path) for h in hits} == {("issues", "issues/1"), ("issues", "issues/6")}
    assert any(h.subset == "notebooks" for h in search(curated, "Sales report"))
    snippet = json.loads(issues_lines()[3])["payload"]["issue"]["body"]  # the GH Archive issue's text
    assert contains(curated, snippet).coverage > 0.5


def test_opt_out_removes_a_users_notebooks_commits_and_issues(curated: Path, tmp_path: Path) -> None:
    before = lookup(curated, user="leaver")
    assert {s.subset for s in before if s.status == "kept"} == {"files", "notebooks", "commits", "issues"}
    listing = tmp_path / "optout.txt"
    listing.write_text("leaver\n")
    out = tmp_path / "without-leaver"
    assert run(["data", "opt-out", str(curated), "--list", str(listing), "--out", str(out)]) == 0
    after = lookup(out, user="leaver")
    assert {s.subset for s in after} == {"files", "notebooks", "commits", "issues"}
    assert {s.status for s in after} == {"opt_out"} | {s.status for s in before if s.status != "kept"}
    for subset in ("notebooks", "commits", "issues"):
        assert not any(r["repo_name"] == "leaver/tools" for r in _rows(out, subset))
        assert any(r["repo_name"] == "acme/fetcher" for r in _rows(out, subset))
    assert search(curated, "no_proxy") and contains(curated, LEAVER_ISSUE["body"]).coverage > 0.5
    assert not search(out, "no_proxy") and contains(out, LEAVER_ISSUE["body"]).coverage == 0
    stats = json.loads((out / "stats.json").read_text())["subsets"]
    assert stats["issues"]["removed"]["opt_out"]["files"] == 1


@pytest.fixture(scope="module")
def tokenizer_dir(curated: Path) -> Path:
    """Our tokenizer stage trained on every subset of the curated dataset."""
    from codefoundry.tokenizer import TokenizerTrainConfig, train_tokenizer

    return train_tokenizer(curated, curated.parent / "tokenizer", TokenizerTrainConfig(vocab_size=400))


def test_special_tokens_of_every_format_encode_to_single_ids(curated: Path, tokenizer_dir: Path) -> None:
    from codefoundry.data.subsets import commits, issues, notebooks
    from codefoundry.tokenizer import SPECIAL_TOKENS, load_tokenizer

    formats = {"notebooks": notebooks.TOKENS, "commits": commits.TOKENS, "issues": issues.TOKENS}
    assert set().union(*formats.values()) <= set(SPECIAL_TOKENS)
    tok = load_tokenizer(tokenizer_dir)
    for subset, tokens in formats.items():
        used = set()
        for row in _rows(curated, subset):
            ids = tok(row["content"], add_special_tokens=False)["input_ids"]
            assert tok.decode(ids) == row["content"]
            pieces = tok.convert_ids_to_tokens(ids)
            for token in tokens:
                count = row["content"].count(token)
                assert pieces.count(token) == count  # each occurrence is one id: never split into pieces
                assert ids.count(SPECIAL_TOKENS.index(token)) == count
                used |= {token} if count else set()
        assert used >= set(tokens) - {"<issue_closed>"} - ({"<empty_output>"} if subset != "notebooks" else set())


def test_tokenizer_and_pack_read_every_subset_with_weights(curated: Path, tokenizer_dir: Path, tmp_path: Path
                                                           ) -> None:
    from codefoundry.errors import UserError
    from codefoundry.tokenizer import TokenizerTrainConfig, load_tokenizer, train_tokenizer
    from codefoundry.train import PackConfig, pack

    only_issues = {"files": 0.0, "notebooks": 0.0, "commits": 0.0, "issues": 1.0}
    tok = train_tokenizer(curated, tmp_path / "tok", TokenizerTrainConfig(vocab_size=400, subset_weights=only_issues))
    kept_issues = json.loads((curated / "stats.json").read_text())["subsets"]["issues"]["totals"]["kept_files"]
    assert read_manifest(tok, kind="tokenizer").extra["documents"] == kept_issues
    with pytest.raises(UserError, match="subsets the dataset does not have: wiki"):
        train_tokenizer(curated, tmp_path / "bad", TokenizerTrainConfig(vocab_size=400, subset_weights={"wiki": 1}))
    config = PackConfig(workers=1, validation_fraction=0.0, subset_weights={"commits": 0.5}, metadata_rate=1.0)
    tokens = pack(curated, tokenizer_dir, tmp_path / "tokens", config)
    index = json.loads((tokens / "index.json").read_text())
    train = index["splits"]["train"]
    assert set(train) == {"files", "notebooks", "commits", "issues"}
    assert train["commits"]["weight"] == 0.5 and train["issues"]["weight"] == 1.0
    assert all(entry["num_documents"] > 0 for entry in train.values())
    tok = load_tokenizer(tokenizer_dir)
    for subset, entry in train.items():  # StarCoder's <reponame>/<filename> prefixes are for files only
        ids = np.fromfile(tokens / entry["file"], dtype=index["dtype"])
        first = tok.decode(ids[: np.load(tokens / entry["documents"])[1]].tolist())
        assert first.startswith("<reponame>") == (subset == "files"), (subset, first[:40])

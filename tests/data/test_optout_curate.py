"""Curation end to end with the steps after the quality filters on real git repositories: opt-out, dedup
ranking, decontamination, PII; then the inspection verbs (lookup, search, contains) and the dataset verbs."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from codefoundry.benchmarks import humaneval
from codefoundry.cli import run
from codefoundry.data.optout import OptOutList
from codefoundry.manifest import read_manifest
from conftest import MIT_LICENSE, make_git_repo, stdlib_files

SECRET_FILE = '''"""Deploy helper."""
MAINTAINER = "kwame.mensah@globex.com"
API_HOST = "52.14.201.77"
aws_key = "AKIAZ3M5P7Q9R2T4V6X8"
'''


def _table(dataset: Path, sub: str = "data") -> list[dict]:
    return [r for f in sorted((dataset / sub / "files").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("curated")
    shared = stdlib_files("textwrap.py", "shlex.py")
    solution = next(p for p in humaneval() if p["task_id"] == "HumanEval/12")
    contaminated = "import os\n\n\n" + "\n".join("    " + ln for ln in (solution["prompt"] +
                                                                       solution["canonical_solution"]).splitlines())
    make_git_repo(root / "repos" / "popular", {"LICENSE": MIT_LICENSE, **shared, "deploy.py": SECRET_FILE},
                  remote="https://github.com/popular-org/popular.git")
    make_git_repo(root / "repos" / "copycat", {  # no license: ranked after the MIT copies
        "textwrap.py": shared["textwrap.py"], "shlex.py": shared["shlex.py"].replace("    ", "  "),
        "heapq.py": stdlib_files("heapq.py")["heapq.py"], "bench_leak.py": contaminated},
        remote="https://github.com/copycat/copycat.git")
    make_git_repo(root / "repos" / "leaver", {"LICENSE": MIT_LICENSE, **stdlib_files("bisect.py")},
                  remote="https://github.com/leaver/tools.git")
    optout = root / "optout.txt"
    optout.write_text("# people who asked to be left out\nhttps://github.com/leaver\n")
    config = root / "c.yaml"
    config.write_text("license_policy: permissive+no_license\nworkers: 1\n")
    out = root / "dataset"
    assert run(["data", "curate", str(root / "repos"), "--out", str(out), "--config", str(config),
                "--opt-out", str(optout)]) == 0
    return out


def test_curate_applies_optout_dedup_decontam_pii(curated: Path) -> None:
    kept = {(r["repo_name"], r["path"]) for r in _table(curated)}
    removed = {(r["repo_name"], r["path"]): r["reason"] for r in _table(curated, "removed")}
    # exact duplicate and near duplicate (reformatted): the MIT copies stay, the unlicensed ones go
    assert ("popular-org/popular", "textwrap.py") in kept and ("popular-org/popular", "shlex.py") in kept
    assert removed[("copycat/copycat", "textwrap.py")] == "exact_dedup"
    assert removed[("copycat/copycat", "shlex.py")] == "near_dedup"
    assert ("copycat/copycat", "heapq.py") in kept
    assert removed[("copycat/copycat", "bench_leak.py")].startswith("decontam:humaneval:HumanEval/12:")
    assert removed[("leaver/tools", "bisect.py")] == "opt_out"
    deploy = next(r for r in _table(curated) if r["path"] == "deploy.py")["content"]
    assert "<EMAIL>" in deploy and "<IP_ADDRESS>" in deploy and "<KEY>" in deploy and "globex" not in deploy
    stats = json.loads((curated / "stats.json").read_text())["subsets"]["files"]["steps"]
    # textwrap.py's author email is real PII too; shlex.py's alphabet constant is not a key
    assert stats["pii"]["counters"] == {"email": 2, "files_redacted": 2, "ip_address": 1, "key": 1}
    assert list(stats)[-5:] == ["opt_out", "exact_dedup", "near_dedup", "decontaminate", "pii"] or \
        {"opt_out", "exact_dedup", "near_dedup", "decontaminate", "pii"} <= set(stats)
    card = (curated / "card.md").read_text()
    assert "Decontaminated against: humaneval, humaneval-infilling, mbpp" in card
    assert "No NER model is used" in card


def test_lookup_by_user_and_repo(curated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data", "lookup", str(curated), "--user", "COPYCAT"]) == 0
    out = capsys.readouterr().out
    assert "copycat/copycat/shlex.py" in out and "near_dedup" in out and "kept" in out
    assert run(["data", "lookup", str(curated), "--repo", "leaver/tools"]) == 0
    assert "opt_out" in capsys.readouterr().out
    assert run(["data", "lookup", str(curated)]) == 1  # neither --user nor --repo: one error line


def test_search_and_contains(curated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data", "search", str(curated), "heappush", "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "copycat/copycat/heapq.py" in out and "[heappush]" in out
    assert run(["data", "search", str(curated), 'unbalanced "quote']) == 0  # not FTS5 syntax: searched as a phrase
    snippet = tmp_path / "snippet.py"
    snippet.write_text("# copied\n" + stdlib_files("heapq.py")["heapq.py"][3000:4500].upper())
    assert run(["data", "contains", str(curated), "--file", str(snippet)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert int(first.split("%")[0]) >= 80
    snippet.write_text(stdlib_files("fnmatch.py")["fnmatch.py"][:1500])  # never in this dataset
    assert run(["data", "contains", str(curated), "--file", str(snippet)]) == 0
    assert capsys.readouterr().out.startswith("0% ")


def test_opt_out_verb_on_finished_dataset(curated: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("popular-org/popular\n")
    out = tmp_path / "v2"
    assert run(["data", "opt-out", str(curated), "--list", str(listing), "--out", str(out)]) == 0
    assert {r["repo_name"] for r in _table(out)} == {"copycat/copycat"}
    reasons = [r["reason"] for r in _table(out, "removed")]
    assert reasons.count("opt_out") == 4  # bisect.py before, three popular files now
    manifest = read_manifest(out)
    assert manifest.extra["opt_out_sha256"] == OptOutList.parse(listing.read_text()).sha256
    assert "dataset" in manifest.inputs
    assert (out / "index" / "search.sqlite").exists()
    totals = json.loads((out / "stats.json").read_text())["subsets"]["files"]["totals"]
    assert totals["kept_files"] == 1  # copycat/heapq.py (its other files were duplicates or contaminated)


def test_opt_out_list_syntax() -> None:
    entries = OptOutList.parse("Octocat\nacme/Tools\nhttps://github.com/x/y.git\nfoo-*\n*/tmp-*\n# c\n\n")
    assert entries.matches("octocat/anything") and entries.matches("ACME/tools") and entries.matches("x/y")
    assert entries.matches("foo-bar/z") and entries.matches("q/tmp-1")
    assert not entries.matches("acme/other") and not entries.matches("bar-foo/z") and not entries.matches(None)
    from codefoundry.errors import UserError

    with pytest.raises(UserError, match="line 1"):
        OptOutList.parse("a/b/c\n")


def test_standalone_step_verbs(curated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    heap_line = stdlib_files("heapq.py")["heapq.py"].splitlines()[40:50]
    bench = tmp_path / "private-eval.jsonl"
    bench.write_text(json.dumps({"id": "p1", "text": "\n".join(heap_line)}) + "\n")
    out = tmp_path / "clean"
    assert run(["data", "decontaminate", str(curated), "--out", str(out), "--benchmark-jsonl", str(bench)]) == 0
    assert "decontaminate removed 1 more" in " ".join(capsys.readouterr().err.split())  # this run's, not the input's
    removed = {r["path"]: r["reason"] for r in _table(out, "removed")}
    assert removed["heapq.py"] == "decontam:private-eval:p1"
    assert removed["bench_leak.py"].startswith("decontam:humaneval")  # the old removals are kept
    assert read_manifest(out).config["decontamination"]["extra_jsonl"] == [str(bench)]
    # recorded for `codefoundry eval`'s contamination check
    assert set(read_manifest(curated).extra["decontaminated_against"]) >= {"humaneval", "mbpp"}
    assert bench.stem in read_manifest(out).extra["decontaminated_against"]
    again = tmp_path / "dedup"
    assert run(["data", "dedup", str(curated), "--out", str(again)]) == 0  # already deduplicated: nothing more
    assert len(_table(again)) == len(_table(curated))
    assert run(["data", "dedup", str(curated), "--out", str(again)]) == 0  # the same run: already complete
    assert "already complete" in " ".join(capsys.readouterr().err.split())
    strict = tmp_path / "strict.yaml"
    strict.write_text("near: {threshold: 0.5}\n")
    assert run(["data", "dedup", str(curated), "--out", str(again), "--config", str(strict)]) == 1  # another run
    assert "made with other settings" in capsys.readouterr().err

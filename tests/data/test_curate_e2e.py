"""`codefoundry data curate` end to end: the artifact opens in datasets and DuckDB, runs are
deterministic, a killed run resumes to identical bytes, and mistakes end in one error line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from codefoundry.cli import run
from codefoundry.data import CurateConfig, curate
from codefoundry.manifest import read_manifest
from fixtures_data import snapshot


def test_dataset_opens_in_datasets_duckdb_and_pyarrow(tiny_dataset: Path) -> None:
    files = datasets.load_dataset(str(tiny_dataset), "files", split="train")
    direct = datasets.load_dataset("parquet", data_dir=str(tiny_dataset / "data" / "files"), split="train")
    assert len(files) == len(direct) > 10
    assert set(files.column_names) >= {"hexsha", "size", "ext", "lang", "repo_name", "path", "licenses",
                                       "license_type", "stars", "forks", "content", "avg_line_length",
                                       "max_line_length", "alphanum_fraction"}
    query = f"SELECT lang, count(*) FROM '{tiny_dataset}/data/files/*.parquet' GROUP BY lang"
    langs = dict(duckdb.sql(query).fetchall())
    assert langs["Python"] >= 8  # 9 stdlib modules; keyword.py says it is "automatically generated"
    removed = duckdb.sql(f"SELECT reason, count(*) FROM '{tiny_dataset}/removed/files/*.parquet' GROUP BY reason")
    reasons = dict(removed.fetchall())
    assert reasons["license:gpl-3.0"] >= 2 and reasons["license:no_license"] >= 2
    stats = json.loads((tiny_dataset / "stats.json").read_text())
    s = stats["subsets"]["files"]
    assert s["totals"]["kept_files"] == len(files)
    assert s["totals"]["files"] == s["totals"]["kept_files"] + s["totals"]["removed_files"]
    assert sum(v["files"] for v in s["removed"].values()) == s["totals"]["removed_files"]
    assert s["steps"]["license"]["removed"]["license:gpl-3.0"] == reasons["license:gpl-3.0"]
    front = yaml.safe_load((tiny_dataset / "card.md").read_text().split("---")[1])
    assert front["configs"][0] == {"config_name": "files",
                                   "data_files": [{"split": "train", "path": "data/files/*.parquet"}]}
    card = (tiny_dataset / "card.md").read_text()
    assert "| MIT |" in card and "license:gpl-3.0" in card
    manifest = read_manifest(tiny_dataset, kind="dataset")
    assert manifest.extra["subsets"] == ["files"]
    assert not (tiny_dataset / ".work").exists()


def test_same_input_same_bytes_whatever_the_workers(tiny_repos: Path, tmp_path: Path) -> None:
    config = CurateConfig(workers=1, shard_max_bytes=40_000, removed_content=True)
    curate([str(tiny_repos)], tmp_path / "a", config)
    curate([str(tiny_repos)], tmp_path / "b", config.model_copy(update={"workers": 2}))
    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert a == b
    shards = sorted((tmp_path / "a" / "data" / "files").glob("*.parquet"))
    assert len(shards) > 1
    assert all(sum(pq.read_table(s).column("size").to_pylist()) <= 40_000 or pq.read_table(s).num_rows == 1
               for s in shards)
    assert pq.read_table(tmp_path / "a" / "removed" / "files").column("content").null_count < \
        pq.read_table(tmp_path / "a" / "removed" / "files").num_rows


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "codefoundry", "data", "curate", *args]


@pytest.mark.parametrize("kill_when", [".work/phase0/000002.done", "data/files"],
                         ids=["mid-units", "mid-finalize"])
def test_killed_run_resumes_to_identical_output(tiny_repos: Path, tmp_path: Path, kill_when: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("workers: 1\n")
    sources = [str(tiny_repos)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    log = tmp_path / "first-run.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(_cli(*sources, "--out", str(killed), "--config", str(config)), env=env,
                                stdout=sink, stderr=sink)
    marker = killed / kill_when
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.json").exists(), "the run finished before it could be killed"
    assert marker.exists(), log.read_text()
    done = subprocess.run(_cli(*sources, "--out", str(killed), "--config", str(config)), env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    clean = tmp_path / "clean"
    assert run(["data", "curate", *sources, "--out", str(clean), "--config", str(config)]) == 0
    assert snapshot(killed) == snapshot(clean)
    assert not (killed / ".work").exists()
    again = subprocess.run(_cli(*sources, "--out", str(killed), "--config", str(config)), env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0 and "already complete" in " ".join(again.stderr.split())


def test_cli_errors_are_one_line(tmp_path: Path, tiny_repos: Path, capsys) -> None:
    assert run(["data", "curate", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
    assert "error: source" in capsys.readouterr().err
    assert run(["data", "curate", str(tiny_repos), "--out", str(tmp_path / "o"), "--license-policy", "some"]) == 1
    err = capsys.readouterr().err
    assert "license_policy" in err and "Traceback" not in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert run(["data", "curate", str(tiny_repos), "--out", str(tmp_path / "full")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_cli_flags_reach_the_config(tiny_repos: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert run(["data", "curate", str(tiny_repos), "--out", str(out), "--languages", "go,c",
                "--license-policy", "all", "--max-file-bytes", "20000", "-j", "1", "--removed-content"]) == 0
    kept = pq.read_table(out / "data" / "files")
    assert set(kept.column("lang").to_pylist()) == {"Go", "C"}
    removed = {r["path"]: r for r in pq.read_table(out / "removed" / "files").to_pylist()}
    assert removed["shlex.py"]["reason"] == "read:too_big" or removed["shlex.py"]["reason"] == \
        "language:not_selected"
    assert removed["README.md"]["content"] is not None
    manifest = read_manifest(out)
    assert manifest.config["license_policy"] == "all" and manifest.config["limits"]["max_file_bytes"] == 20000

"""`data curate` reading and writing fsspec URLs (`memory://`, `local://`, `file://`): the same dataset bytes as
local paths, published with its manifest last, resumable, and bad URLs as one error line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest

from codefoundry.data import CurateConfig, curate
from codefoundry.data.pipeline import storage
from codefoundry.errors import UserError
from conftest import stdlib_files
from fixtures_data import OUTPUTS, snapshot

CONFIG = {"workers": 1, "shard_max_bytes": 30_000, "inspection_indexes": False,
          "limits": {"table_rows_per_unit": 7}}


MODULES = ("textwrap.py", "shlex.py", "colorsys.py", "bisect.py", "heapq.py", "fnmatch.py", "glob.py", "keyword.py",
           "this.py", "string.py", "graphlib.py", "numbers.py", "queue.py", "sched.py", "stat.py", "token.py",
           "tabnanny.py", "quopri.py", "uu.py", "netrc.py", "opcode.py", "reprlib.py", "sndhdr.py", "wave.py")
SOURCE_SPECIFIC = ("card.md", "README.md")
"""The card names the sources (a path or a URL); everything else must be byte-identical."""


def comparable(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k not in SOURCE_SPECIFIC}


def rows() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for path, text in stdlib_files(*MODULES).items():
        out.append({"content": text, "path": path, "repo_name": "python/cpython", "licenses": ["MIT"]})
    out.append({"content": text, "path": "copy.py", "repo_name": "acme/copy", "licenses": ["MIT"]})  # exact dup
    out.append({"content": "x", "path": "gpl.py", "repo_name": "acme/gpl", "licenses": ["GPL-3.0"]})
    return out


def jsonl_bytes() -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows()).encode()


def remote_snapshot(url: str) -> dict[str, bytes]:
    fs, root = storage.filesystem(url)
    root = root.rstrip("/")
    files = {}
    for name in OUTPUTS:
        target = f"{root}/{name}"
        paths = [target] if fs.isfile(target) else sorted(fs.find(target))
        for f in paths:
            files[f[len(root) + 1:].lstrip("/")] = fs.cat_file(f)
    return files


@pytest.fixture()
def staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "staging"
    monkeypatch.setenv(storage.STAGING_ENV, str(root))
    return root


@pytest.fixture()
def memory_input() -> str:
    url = "memory://inputs/rows.jsonl"
    with fsspec.open(url, "wb") as f:
        f.write(jsonl_bytes())
    yield url
    storage.remove_remote("memory://inputs")


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("ref")
    (folder / "rows.jsonl").write_bytes(jsonl_bytes())
    out = folder / "dataset"
    curate([str(folder / "rows.jsonl")], out, CurateConfig.model_validate(CONFIG))
    return snapshot(out)


def test_memory_url_in_and_out_gives_the_local_bytes(local_reference: dict[str, bytes], memory_input: str,
                                                     staging: Path) -> None:
    url = "memory://datasets/one"
    try:
        assert curate([memory_input], url, CurateConfig.model_validate(CONFIG)) == url
        got = remote_snapshot(url)
        assert comparable(got) == comparable(local_reference)
        assert memory_input in got["card.md"].decode()
        assert any(k.startswith("data/files/") for k in got) and "stats.json" in got
        manifest = json.loads(fsspec.open(f"{url}/manifest.json", "rb").open().read())
        assert manifest["kind"] == "dataset" and manifest["extra"]["run_key"]
        assert not any(staging.iterdir()) if staging.exists() else True  # staging removed once published
        # the same command again: already complete, nothing rewritten
        assert curate([memory_input], url, CurateConfig.model_validate(CONFIG)) == url
        assert comparable(remote_snapshot(url)) == comparable(local_reference)
        # other settings into the same URL: refused, as for a local --out
        other = CurateConfig.model_validate({**CONFIG, "shard_max_bytes": 10_000})
        with pytest.raises(UserError, match="other settings"):
            curate([memory_input], url, other)
    finally:
        storage.remove_remote(url)


def test_an_interrupted_publish_resumes_from_the_staged_dataset(local_reference: dict[str, bytes],
                                                                memory_input: str, staging: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    url = "memory://datasets/interrupted"
    calls = {"n": 0}
    real_put = fsspec.implementations.memory.MemoryFileSystem.put_file

    def failing_put(self: object, lpath: str, rpath: str, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("connection reset")  # the upload dies part way through
        real_put(self, lpath, rpath, *args, **kwargs)

    try:
        monkeypatch.setattr(fsspec.implementations.memory.MemoryFileSystem, "put_file", failing_put)
        with pytest.raises(OSError):
            curate([memory_input], url, CurateConfig.model_validate(CONFIG))
        fs, _ = storage.filesystem(url)
        assert not fs.exists(f"{url}/manifest.json")  # the manifest goes last: no reader sees half a dataset
        staged = storage.staging_dir(url)
        assert (staged / "manifest.json").exists() and not (staged / ".work").exists()
        monkeypatch.setattr(fsspec.implementations.memory.MemoryFileSystem, "put_file", real_put)
        curate([memory_input], url, CurateConfig.model_validate(CONFIG))
        assert comparable(remote_snapshot(url)) == comparable(local_reference)
        assert not staged.exists()
    finally:
        storage.remove_remote(url)


def test_file_urls_are_local_paths_and_local_urls_go_through_fsspec(local_reference: dict[str, bytes],
                                                                    tmp_path: Path, staging: Path) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_bytes(jsonl_bytes())
    out = tmp_path / "dataset"
    curate([f"local://{source}"], f"file://{out}", CurateConfig.model_validate(CONFIG))
    assert comparable(snapshot(out)) == comparable(local_reference)
    assert not staging.exists()  # a file:// --out is written in place
    assert f"local://{source}" in (out / "card.md").read_text()
    published = tmp_path / "published"
    curate([f"file://{source}"], f"local://{published}", CurateConfig.model_validate(CONFIG))
    assert comparable(snapshot(published)) == comparable(local_reference)
    assert (published / "manifest.json").exists() and not (published / ".work").exists()


def test_cli_remote_source_errors_are_one_line(tmp_path: Path) -> None:
    code = "from codefoundry.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", code, "data", "curate", "memory://nowhere/rows.jsonl", "--out",
                           str(tmp_path / "d")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert lines[0].startswith("error:") and "does not exist" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(UserError, match=r"only \.jsonl and \.parquet"):
        curate(["memory://nowhere/repo.tar.gz"], tmp_path / "e", CurateConfig.model_validate(CONFIG))


@pytest.mark.slow
def test_parquet_behind_a_url_is_cut_into_the_same_units(tmp_path: Path, staging: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows())
    local = tmp_path / "rows.parquet"
    pq.write_table(table, local)
    url = "memory://inputs/rows.parquet"
    with fsspec.open(url, "wb") as f:
        pq.write_table(table, f)
    try:
        a, b = tmp_path / "a", tmp_path / "b"
        curate([str(local)], a, CurateConfig.model_validate(CONFIG))
        curate([url], b, CurateConfig.model_validate(CONFIG))
        assert comparable(snapshot(a)) == comparable(snapshot(b))
        stats = json.loads((b / "stats.json").read_text())["subsets"]["files"]["totals"]
        assert stats["files"] == len(rows())
    finally:
        storage.remove_remote(url)

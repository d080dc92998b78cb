"""Sources: git at HEAD, directories, archives, tables, the embedded corpus, and every bad input."""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codefoundry.data.sources import ReadOptions, units_for
from codefoundry.data.sources.python_env import DistributionRepo
from codefoundry.data.sources.unit import SourceLimits
from codefoundry.errors import UserError
from conftest import MIT_LICENSE, make_git_repo, stdlib_files


def rows(source: str | Path, limits: SourceLimits | None = None) -> dict[str, dict]:
    options = ReadOptions(limits or SourceLimits())
    units = units_for(str(source), options)
    table = pa.concat_tables([t for u in units for t in u.read()])
    return {r["path"]: r for r in table.to_pylist()}


def test_git_repo_reads_head_only_and_names_repo_from_remote(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "tools", {"LICENSE": MIT_LICENSE, "a.py": "x = 1\n", "img.png": b"\x89PNG\0\0",
                                              "big.py": "y = 2\n" * 400},
                         remote="git@github.com:acme/tools.git")
    (repo / "untracked.py").write_text("junk = True\n")
    (repo / "a.py").write_text("modified but not committed\n")
    os.symlink("a.py", repo / "link.py")
    subprocess.run(["git", "-C", str(repo), "add", "link.py"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "link"],
                   check=True)
    got = rows(repo, SourceLimits(max_file_bytes=2000))
    assert set(got) == {"LICENSE", "a.py", "img.png", "big.py", "link.py"}
    assert got["a.py"]["content"] == "x = 1\n"
    assert got["a.py"]["hexsha"] == subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD:a.py"],
                                                   capture_output=True, text=True).stdout.strip()
    assert {r["repo_name"] for r in got.values()} == {"acme/tools"}
    assert got["a.py"]["licenses"] == ["MIT"] and got["a.py"]["license_type"] == "permissive"
    assert got["img.png"]["reason"] == "read:binary"
    assert got["big.py"]["reason"] == "read:too_big"
    assert got["link.py"]["reason"] == "read:symlink"


def test_repo_name_falls_back_to_folder_and_handles_https(tmp_path: Path) -> None:
    make_git_repo(tmp_path / "repos" / "plain", {"a.py": "x = 1\n"})
    make_git_repo(tmp_path / "repos" / "hub", {"a.py": "x = 1\n"}, remote="https://github.com/org/hub-name.git")
    make_git_repo(tmp_path / "repos" / "empty-dir-sibling", {"b.py": "y = 1\n"})
    names = {u.describe(): u for u in units_for(str(tmp_path / "repos"), ReadOptions())}
    assert len(names) == 3
    assert {next(iter(u.read())).column("repo_name")[0].as_py() for u in names.values()} == {
        "plain", "org/hub-name", "empty-dir-sibling"}


def test_directory_bad_inputs_are_skipped_with_reasons(tmp_path: Path) -> None:
    d = tmp_path / "proj"
    d.mkdir()
    (d / "ok.py").write_text("print('ok')\n")
    (d / "bin.dat").write_bytes(b"abc\0def")
    (d / "latin1.py").write_bytes("caf\xe9 = 1\n".encode("latin-1"))
    (d / "huge.py").write_text("x = 1\n" * 50)
    os.symlink("loop", d / "loop")  # a symlink to itself
    os.symlink(".", d / "cycle")    # a directory symlink back to its parent
    os.symlink("missing.py", d / "dangling.py")
    os.mkfifo(d / "pipe")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(d / "sock"))
    try:
        os.mknod(d / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("this container cannot create device files")
    try:
        got = rows(d, SourceLimits(max_file_bytes=100))
    finally:
        sock.close()
    reasons = {p: r["reason"] for p, r in got.items()}
    assert reasons == {
        "ok.py": None, "bin.dat": "read:binary", "latin1.py": "read:invalid_utf8", "huge.py": "read:too_big",
        "loop": "read:symlink_loop", "cycle": "read:symlink_loop", "dangling.py": "read:broken_symlink",
        "pipe": "read:fifo", "sock": "read:socket", "null": "read:device",
    }
    assert got["ok.py"]["repo_name"] == "proj" and got["ok.py"]["license_type"] == "no_license"


def _tar_gz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_archives_are_read_in_memory_with_top_folder_stripped(tmp_path: Path) -> None:
    files = {"tools-main/LICENSE": MIT_LICENSE.encode(), "tools-main/src/a.py": b"x = 1\n"}
    tgz = _tar_gz(tmp_path / "tools-main.tar.gz", files)
    z = tmp_path / "tools-main.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    for archive in (tgz, z):
        got = rows(archive)
        assert set(got) == {"LICENSE", "src/a.py"}
        assert got["src/a.py"]["content"] == "x = 1\n" and got["src/a.py"]["licenses"] == ["MIT"]
        assert got["src/a.py"]["repo_name"] == "tools-main"


def test_corrupt_and_bomb_archives(tmp_path: Path) -> None:
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    good = _tar_gz(tmp_path / "x.tar.gz", {"a.py": b"x = 1\n" * 1000})
    (tmp_path / "truncated.tar.gz").write_bytes(good.read_bytes()[:60])
    assert rows(tmp_path / "broken.zip")["broken.zip"]["reason"] == "archive:corrupt"
    assert rows(tmp_path / "truncated.tar.gz")["truncated.tar.gz"]["reason"] == "archive:corrupt"
    bomb = tmp_path / "bomb.zip"  # 3 members of 20 MB of zeros each: ~60 KB on disk
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"zeros{i}.txt", b"0" * 20_000_000)
        zf.writestr("small.py", b"x = 1\n")
    got = rows(bomb, SourceLimits(max_file_bytes=30_000_000, max_archive_bytes=25_000_000))
    assert got["zeros0.txt"]["reason"] is None
    assert got["zeros1.txt"]["reason"] == "archive:too_big"  # the archive's budget is spent
    got = rows(bomb)  # default 1 MB per file: never decompressed past the limit
    assert got["zeros0.txt"]["reason"] == "read:too_big" and got["small.py"]["content"] == "x = 1\n"


def test_jsonl_parquet_and_save_to_disk_tables(tmp_path: Path) -> None:
    records = [{"content": "def f():\n    return 1\n", "path": "a.py", "max_stars_repo_name": "o/r",
                "max_stars_repo_licenses": ["MIT"], "max_stars_count": 12},
               {"content": "x = 1\n", "path": "b.py", "repo_name": "o/s", "licenses": ["GPL-3.0-only"]}]
    jsonl = tmp_path / "stack.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    got = rows(jsonl)
    assert got["a.py"]["repo_name"] == "o/r" and got["a.py"]["stars"] == 12
    assert got["a.py"]["license_type"] == "permissive" and got["b.py"]["licenses"] == ["GPL-3.0"]
    assert got["b.py"]["license_type"] == "non_permissive"
    gz = tmp_path / "stack.jsonl.gz"
    gz.write_bytes(gzip.compress((jsonl.read_text() + "{not json\n").encode()))
    got = rows(gz)
    assert got["a.py"]["content"].startswith("def f") and got["line 3"]["reason"] == "read:bad_json"
    table = pa.Table.from_pylist([{"content": "x = 1\n", "path": "c.py"}, {"content": None, "path": "d.py"}])
    pq.write_table(table, tmp_path / "t.parquet")
    got = rows(tmp_path / "t.parquet")
    assert got["c.py"]["license_type"] == "no_license" and got["d.py"]["reason"] == "read:missing_content"
    datasets.Dataset.from_dict({"content": ["y = 2\n"] * 3, "path": ["e.py", "f.py", "g.py"]}).save_to_disk(
        str(tmp_path / "hf"))
    assert set(rows(tmp_path / "hf", SourceLimits(table_rows_per_unit=2))) == {"e.py", "f.py", "g.py"}
    assert len(units_for(str(tmp_path / "hf"), ReadOptions(SourceLimits(table_rows_per_unit=2)))) == 2


def test_table_without_content_column_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text('{"text": "hi", "path": "a"}\n')
    with pytest.raises(UserError, match="has no content column"):
        units_for(str(tmp_path / "x.jsonl"), ReadOptions())
    with pytest.raises(UserError, match="does not exist"):
        units_for(str(tmp_path / "nope"), ReadOptions())


def test_site_packages_distribution_is_a_repository_with_its_license() -> None:
    units = units_for("site-packages", ReadOptions())
    assert len(units) > 20
    unit = next(u for u in units if isinstance(u, DistributionRepo) and "iniconfig" in u.describe())
    table = pa.concat_tables(list(unit.read()))
    assert set(table.column("repo_name").to_pylist()) == {"pypi/iniconfig"}
    assert table.column("licenses")[0].as_py() == ["MIT"]
    assert any(p.endswith("__init__.py") for p in table.column("path").to_pylist())
    assert not any(".dist-info/" in p for p in table.column("path").to_pylist())
    stdlib = units_for("stdlib", ReadOptions())
    assert len(stdlib) == 1 and stdlib[0].describe().startswith("stdlib ")


def test_max_files_per_repo_still_reads_license(tmp_path: Path) -> None:
    files = {f"m{i:02d}.py": "x = 1\n" for i in range(10)} | {"LICENSE": MIT_LICENSE, **stdlib_files("bisect.py")}
    repo = make_git_repo(tmp_path / "r", files)
    got = rows(repo, SourceLimits(max_files_per_repo=3))
    assert set(got) == {"LICENSE", "bisect.py", "m00.py"}
    assert got["m00.py"]["licenses"] == ["MIT"]


def test_directory_symlinks_never_lead_out_of_the_source(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("root:x:0:0:root:/root:/bin/bash\n")
    d = tmp_path / "proj"
    (d / "src").mkdir(parents=True)
    (d / "src" / "real.py").write_text("x = 1\n")
    os.symlink("/etc/passwd", d / "src" / "passwd.py")
    os.symlink(outside, d / "src" / "secret.py")
    os.symlink("../../secret.txt", d / "src" / "relative.py")
    os.symlink("real.py", d / "src" / "inside.py")       # stays in the source: read as the file it names
    os.symlink("src/secret.py", d / "chain.py")          # a link to a link that leaves
    got = rows(d)
    for name in ("src/passwd.py", "src/secret.py", "src/relative.py", "chain.py"):
        assert got[name]["reason"] == "read:symlink" and got[name]["content"] is None, name
    assert got["src/inside.py"]["content"] == "x = 1\n" and got["src/real.py"]["reason"] is None


def test_file_names_that_are_not_utf8_are_skipped_not_fatal(tmp_path: Path) -> None:
    d = tmp_path / "proj"
    d.mkdir()
    (d / "ok.py").write_text("x = 1\n")
    with open(os.path.join(os.fsencode(d), b"caf\xe9.py"), "wb") as f:
        f.write(b"y = 2\n")
    got = rows(d)
    assert got["ok.py"]["reason"] is None
    assert got["caf\\xe9.py"]["reason"] == "read:path_not_utf8" and got["caf\\xe9.py"]["content"] is None
    repo = tmp_path / "gitrepo"
    repo.mkdir()
    with open(os.path.join(os.fsencode(repo), b"na\xefve.py"), "wb") as f:
        f.write(b"z = 3\n")
    make_git_repo(repo, {"a.py": "a = 1\n"})
    got = rows(repo)
    assert got["na\\xefve.py"]["reason"] == "read:path_not_utf8" and got["a.py"]["content"] == "a = 1\n"
    latin = tmp_path / "d\xe9p\xf4t".encode("latin-1").decode("utf-8", "surrogateescape")  # an odd folder name too
    latin.mkdir()
    (latin / "m.py").write_text("m = 1\n")
    got = rows(latin)
    assert got["m.py"]["repo_name"] == "d\\xe9p\\xf4t" and got["m.py"]["content"] == "m = 1\n"


def test_license_files_in_any_encoding_and_any_folder(tmp_path: Path) -> None:
    gpl = (Path(__file__).parents[2] / "src/codefoundry/data/license/texts/GPL-3.0.txt").read_text()
    repo = make_git_repo(tmp_path / "r", {
        "LICENSE": MIT_LICENSE.replace("Acme Tools", "Jürgen Müller").encode("utf-16"),  # UTF-16 with BOM
        "a.py": "a = 1\n",
        "contrib/foo/COPYING": gpl.replace("Copyright", "Copyright © Société").encode("latin-1"),
        "contrib/foo/b.py": "b = 2\n",
        "contrib/c.py": "# SPDX-License-Identifier: GPL-2.0-only\nc = 3\n",
        "web/package.json": b'\xef\xbb\xbf{"name": "web", "license": "BUSL-1.1"}',
        "web/d.js": "d = 4\n",
    })
    got = rows(repo)
    assert got["a.py"]["licenses"] == ["MIT"] and got["a.py"]["license_type"] == "permissive"
    assert got["LICENSE"]["reason"] == "read:binary"   # the row is not text; its license still counts
    assert got["contrib/foo/b.py"]["licenses"] == ["GPL-3.0", "MIT"]
    assert got["contrib/foo/b.py"]["license_type"] == "non_permissive"
    assert got["contrib/c.py"]["licenses"] == ["GPL-2.0", "MIT"]
    assert got["web/d.js"]["licenses"] == ["BUSL-1.1", "MIT"] and got["web/d.js"]["license_type"] == "non_permissive"

"""Hostile input to `data curate`: every bad file is skipped with its reason, the run completes, memory stays bounded.

One folder of repositories holds a good git repository and the worst of what a crawl brings
home: binary files, text in other encodings, a sparse 3 GB file, files over the size limit,
symlink loops and links out of the tree, a FIFO (reading it would block forever), a socket, a
device node, an unreadable file, a name that is not UTF-8, and archives that are bombs
(a member that inflates 32 MB from a few KB, a zip whose members add up past the archive
budget) or garbage. The CLI runs in a subprocess; its peak memory is measured.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import MIT_LICENSE, make_git_repo, stdlib_files

MB = 1_000_000
ARCHIVE_BUDGET = 8 * MB


def _without_root_reads() -> list[str] | None:
    """A prefix that runs a command without root's power to read any file (root reads a mode-000 file, so the
    unreadable-file case needs it): [] when not root, None when it cannot be had."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    # root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH in its bounding set obeys file modes
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def _hostile_dir(root: Path, with_device: bool) -> dict[str, str]:
    """A plain folder of bad files; returns path → the reason it must be removed with."""
    root.mkdir(parents=True)
    (root / "LICENSE").write_text(MIT_LICENSE)
    (root / "ok.py").write_text(stdlib_files("colorsys.py")["colorsys.py"])
    expected = {}

    def bad(name: str, reason: str, make) -> None:
        make(root / name)
        expected[name] = reason

    bad("image.png", "read:binary", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + os.urandom(4000)))
    bad("latin1.py", "read:invalid_utf8", lambda p: p.write_bytes(b"# caf\xe9 cr\xe8me\nx = 1\n"))
    bad("utf16.py", "read:binary", lambda p: p.write_bytes("x = 'utf-16 text'\n".encode("utf-16")))
    bad("truncated_utf8.py", "read:invalid_utf8", lambda p: p.write_bytes(b"s = '\xe2\x82'\n"))
    bad("sparse_3gb.py", "read:too_big", lambda p: (p.touch(), os.truncate(p, 3 * 10**9)))
    bad("big.py", "read:too_big", lambda p: p.write_text("x = 1\n" * 200_000))
    bad("loop_a", "read:symlink_loop", lambda p: p.symlink_to("loop_b"))
    bad("loop_b", "read:symlink_loop", lambda p: p.symlink_to("loop_a"))
    bad("up", "read:symlink_loop", lambda p: p.symlink_to(".."))
    bad("passwd.py", "read:symlink", lambda p: p.symlink_to("/etc/passwd"))
    bad("zero.py", "read:symlink", lambda p: p.symlink_to("/dev/zero"))
    bad("dangling.py", "read:broken_symlink", lambda p: p.symlink_to("nowhere.py"))
    bad("pipe.py", "read:fifo", lambda p: os.mkfifo(p))
    bad("sock.py", "read:socket", lambda p: socket.socket(socket.AF_UNIX).bind(str(p)))
    if with_device:
        bad("zero_dev.py", "read:device", lambda p: os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 5)))
    bad("secret.py", "read:unreadable", lambda p: (p.write_text("x = 1\n"), p.chmod(0)))
    (root / os.fsdecode(b"bad\xffname.py")).write_text("x = 1\n")
    expected["bad\\xffname.py"] = "read:path_not_utf8"
    return expected


def _zip_over_budget(path: Path) -> None:
    """Each member under max_file_bytes, together 16 MB of zeros (the archive is ~16 KB): past the budget."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("top/README.md", "# a zip\n")
        for i in range(20):
            zf.writestr(f"top/zeros_{i:02d}.py", b"\n" * 800_000)


def _tar_bomb(path: Path) -> None:
    """A 32 MB member of zeros that gzip packs into ~32 KB, a symlink member and a path out of the tree."""
    with tarfile.open(path, "w:gz") as tf:
        def add(name: str, data: bytes, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.size, info.type, info.linkname = len(data), kind, link
            tf.addfile(info, io.BytesIO(data) if data else None)
        add("pkg/ok.py", b"def f():\n    return 2\n")
        add("pkg/zeros.py", b"\0" * (32 * 2**20))
        add("pkg/link.py", b"", tarfile.SYMTYPE, "/etc/passwd")
        add("pkg/../../escape.py", b"x = 3\n")


@pytest.fixture
def hostile_sources() -> Iterator[tuple[Path, dict[str, dict[str, str]]]]:
    """The folder of repositories, and what each bad file must be removed with, by repository and path."""
    base = Path(tempfile.mkdtemp(prefix="cf-hostile-"))
    try:
        src = base / "repos"
        make_git_repo(src / "good", {"LICENSE": MIT_LICENSE, **stdlib_files("textwrap.py")},
                      remote="https://github.com/acme/good.git")
        expected = {"hostile": _hostile_dir(src / "hostile", with_device=os.geteuid() == 0)}
        _zip_over_budget(src / "zipbomb.zip")
        _tar_bomb(src / "tarbomb.tar.gz")
        (src / "garbage.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(5000))
        expected["garbage"] = {"garbage.tar.gz": "archive:corrupt"}
        expected["tarbomb"] = {"zeros.py": "read:too_big", "link.py": "read:symlink"}
        yield base, expected
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_hostile_inputs_are_skipped_with_reasons(hostile_sources) -> None:
    base, expected = hostile_sources
    prefix = _without_root_reads()
    if prefix is None:  # root reads a mode-000 file: that case cannot be made here
        expected["hostile"].pop("secret.py")
    out = base / "dataset"
    (base / "curate.json").write_text(json.dumps({"limits": {"max_archive_bytes": ARCHIVE_BUDGET}}))
    env = {**os.environ, "COLUMNS": "200"}
    start = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    argv = [sys.executable, "-m", "codefoundry", "data", "curate", str(base / "repos"), "--out", str(out),
            "--workers", "1", "--config", str(base / "curate.json")]
    proc = subprocess.run([*(prefix or []), *argv],
                          capture_output=True, text=True, env=env, timeout=300, cwd=base)
    seconds = time.monotonic() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    removed = pq.read_table(out / "removed" / "files").to_pylist()
    kept = pq.read_table(out / "data" / "files").to_pylist()
    reasons = {(r["repo_name"], r["path"]): r["reason"] for r in removed}
    for repo, cases in expected.items():
        for path, reason in cases.items():
            assert reasons.get((repo, path)) == reason, (repo, path, reasons.get((repo, path)), sorted(reasons))
    # the good files beside the bad ones were read (whatever the content steps then made of them)
    assert not str(reasons.get(("hostile", "ok.py"), "")).startswith("read:"), reasons.get(("hostile", "ok.py"))
    assert ("hostile", "ok.py") in {(r["repo_name"], r["path"]) for r in kept}, reasons.get(("hostile", "ok.py"))
    assert {"textwrap.py"} <= {r["path"] for r in kept if r["repo_name"] == "acme/good"}
    over_budget = [r for r in removed if r["repo_name"] == "zipbomb" and r["reason"] == "archive:too_big"]
    assert over_budget, [r["reason"] for r in removed if r["repo_name"] == "zipbomb"]
    assert all(r["content"] is None or len(r["content"]) <= MB for r in removed + kept)
    assert seconds < 400, f"curation of hostile input took {seconds:.0f} s"   # no hang (a FIFO read would block)
    if peak_kib > before:  # the run's own peak (a larger earlier child would hide it)
        assert peak_kib < 1_500_000, f"curation peaked at {peak_kib / 1024:.0f} MiB on a 3 GB sparse file and bombs"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["subsets"]["files"]["totals"]["removed_files"] == len(removed)
